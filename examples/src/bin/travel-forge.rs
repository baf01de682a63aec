//! `travel-forge`: what an attacker can do to a stolen delegation token, to show that the flights
//! API refuses the results.
//!
//! - `tamper`: rewrites a right in place in the signed bytes (`flights:read` -> `flights:book`, the
//!   same length, so the token still parses): the issuer's signature no longer verifies.
//! - `widen`: appends a block claiming `right("flights:book")`. Anyone holding a Biscuit token
//!   can append a block, but only facts of the authority block and of blocks signed by the issuer
//!   are trusted: the claim is ignored, and the extra right stays unusable.
//!
//! Both print the forged token on stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use biscuit_auth::builder::BlockBuilder;
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

/// Forges copies of a delegation token (for the travel example's refusals).
#[derive(Debug, Parser)]
#[command(name = "travel-forge", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rewrites `--from` into `--to` (same length) everywhere in the token's bytes.
    Tamper {
        /// The token.
        #[arg(long)]
        token_file: PathBuf,
        /// The text to replace.
        #[arg(long, default_value = "flights:read")]
        from: String,
        /// Its replacement (the same length).
        #[arg(long, default_value = "flights:book")]
        to: String,
    },
    /// Appends an untrusted block claiming `right(<RIGHT>)`.
    Widen {
        /// The token.
        #[arg(long)]
        token_file: PathBuf,
        /// The right claimed.
        #[arg(long, default_value = "flights:book")]
        right: String,
    },
}

fn read(path: &Path) -> Result<Zeroizing<String>> {
    let s = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    Ok(Zeroizing::new(s.trim().to_owned()))
}

fn tamper(token: &str, from: &str, to: &str) -> Result<String> {
    if from.len() != to.len() || from.is_empty() {
        bail!("--from and --to must have the same, non-zero length");
    }
    let mut bytes = Zeroizing::new(
        URL_SAFE
            .decode(token)
            .context("the token is not base64url")?,
    );
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if bytes.get(i..i + from.len()) == Some(from) {
            if let Some(window) = bytes.get_mut(i..i + from.len()) {
                window.copy_from_slice(to);
            }
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    if found == 0 {
        bail!(
            "the token does not contain {:?}",
            String::from_utf8_lossy(from)
        );
    }
    Ok(URL_SAFE.encode(bytes.as_slice()))
}

fn widen(token: &str, right: &str) -> Result<String> {
    let parsed = signet_delegation::parse_unverified(token)?;
    let block = BlockBuilder::new()
        .fact(biscuit_auth::builder::fact(
            "right",
            &[biscuit_auth::builder::string(right)],
        ))
        .map_err(|e| anyhow!("the block: {e}"))?;
    parsed
        .append(block)
        .and_then(|t| t.to_base64())
        .map_err(|e| anyhow!("cannot append a block: {e}"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Tamper {
            token_file,
            from,
            to,
        } => read(token_file).and_then(|t| tamper(&t, from, to)),
        Command::Widen { token_file, right } => read(token_file).and_then(|t| widen(&t, right)),
    };
    match result {
        Ok(forged) => {
            println!("{forged}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("travel-forge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
