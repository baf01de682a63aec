//! Tests of the public API of `signet-spiffe`, compiled into one binary.
//!
//! Fixtures live in `spiffe/testdata/` and are written by `tests/fixtures_gen.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle;
mod id;
mod svid;
mod wit;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The bytes of `spiffe/testdata/<name>`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Midnight UTC on 1 January of `year` (fixtures are valid 2025..2035, CAs until 2045).
pub fn jan_1(year: u64) -> SystemTime {
    // Days from 1970-01-01 to `year`-01-01.
    let days: u64 = (1970..year)
        .map(|y| {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                366
            } else {
                365
            }
        })
        .sum();
    UNIX_EPOCH + Duration::from_secs(days * 86_400)
}

#[test]
fn jan_1_is_right() {
    assert_eq!(
        jan_1(2030).duration_since(UNIX_EPOCH).unwrap().as_secs(),
        1_893_456_000
    );
}
