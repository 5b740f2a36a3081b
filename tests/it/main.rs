//! Integration tests: the proxy in process, against in-process mocks of Entra ID and an Azure ML upstream,
//! all on 127.0.0.1:0. One binary, one module per area.

mod support;

mod proxy;
