//! The loop against hyper: framing decisions and answers.
