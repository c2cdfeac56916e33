//! Helpers shared by the configuration tests.

#![allow(dead_code)] // Each test crate uses its own subset.

use std::fmt::Debug;

use zeo_config::{Error, SocketAddress};

/// `host:port` over TCP.
pub fn tcp(host: &str, port: u16) -> SocketAddress {
    SocketAddress::Tcp {
        host: host.into(),
        port,
    }
}

/// The error of a parse that must fail.
pub fn expect_err<T: Debug>(result: Result<T, Error>) -> Error {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => e,
    }
}
