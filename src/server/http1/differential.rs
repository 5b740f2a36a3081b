//! The loop's framing decision against hyper's, for the tests and the fuzz target.
