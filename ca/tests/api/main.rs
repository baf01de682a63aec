//! Integration tests of signet-ca, compiled into one binary.

// Test code: helpers outside `#[test]` functions may unwrap too (house rule: tests may unwrap).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod csr;
mod jwt;
mod openssl;
mod persistence;
mod pkilint;
mod rotation;
mod svid;
mod upstream;
mod wit;
