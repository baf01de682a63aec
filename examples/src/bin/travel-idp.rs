//! `travel-idp`: a **stand-in** for a company's OpenID Connect identity provider, for the travel
//! example only.
//!
//! A real IdP authenticates people (passwords, passkeys, SSO) and serves its keys at a `jwks_uri`.
//! This one does neither: it holds a P-256 key in a directory, writes the public JWK Set that
//! the issuer's `[[delegation.identity_providers]]` table reads through `jwks_path`, and prints
//! ID tokens signed ES256 for whatever `--sub` it is given. Anyone who can read its directory
//! can sign in as anyone: never point a real issuer at it.
//!
//! ```sh
//! travel-idp init --dir D --issuer https://idp.example.com   # D/idp-key.p8 (0600), D/idp.json, D/jwks.json
//! travel-idp id-token --dir D --sub alice --aud signet --email alice@example.com
//! ```

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use signet_examples::unix_now;
use zeroize::Zeroizing;

const KEY_FILE: &str = "idp-key.p8";
const META_FILE: &str = "idp.json";
const JWKS_FILE: &str = "jwks.json";

/// A stand-in OpenID Connect identity provider for the travel example (not a real IdP).
#[derive(Debug, Parser)]
#[command(name = "travel-idp", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a P-256 signing key and its public JWK Set in a directory.
    Init {
        /// Where the key (`idp-key.p8`, mode 0600), `idp.json` and `jwks.json` go.
        #[arg(long)]
        dir: PathBuf,
        /// The `iss` of the ID tokens (the `issuer` of the issuer's identity provider table).
        #[arg(long)]
        issuer: String,
    },
    /// Prints a signed ID token (ES256): `iss`, `sub`, `aud`, `iat`, `exp`, and `email` with
    /// `email_verified: true` when `--email` is given.
    IdToken {
        /// The directory of `init`.
        #[arg(long)]
        dir: PathBuf,
        /// The user.
        #[arg(long)]
        sub: String,
        /// The client ID the token is for (the `audience` of the issuer's table).
        #[arg(long)]
        aud: String,
        /// The user's (verified) email.
        #[arg(long)]
        email: Option<String>,
        /// The token's lifetime.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of the key, and its RFC 7638 thumbprint (used as `kid`).
fn public_jwk(key: &EcdsaKeyPair) -> Result<(Value, String)> {
    // Uncompressed point: 0x04 || x || y.
    let point = key.public_key().as_ref();
    let (x, y) = match point {
        [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
        _ => bail!("unexpected P-256 public key encoding"),
    };
    let (x, y) = (b64(x), b64(y));
    // RFC 7638: the required members, lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid =
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref());
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y,
                     "kid": kid, "use": "sig", "alg": "ES256"});
    Ok((jwk, kid))
}

fn init(dir: &Path, issuer: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| anyhow!("cannot generate a P-256 key"))?;
    let pkcs8 = key
        .to_pkcs8v1()
        .map_err(|_| anyhow!("cannot encode the key"))?;
    let key_path = dir.join(KEY_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(pkcs8.as_ref()))
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    let (jwk, kid) = public_jwk(&key)?;
    let write = |name: &str, doc: Value| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, format!("{doc:#}\n"))
            .with_context(|| format!("cannot write {}", p.display()))
    };
    write(
        META_FILE,
        json!({"issuer": issuer, "kid": kid, "alg": "ES256"}),
    )?;
    write(JWKS_FILE, json!({"keys": [jwk]}))?;
    println!(
        "stand-in IdP {issuer}: key {kid}, JWK Set {}",
        dir.join(JWKS_FILE).display()
    );
    Ok(())
}

fn id_token(dir: &Path, sub: &str, aud: &str, email: Option<&str>, ttl: Duration) -> Result<()> {
    let meta_path = dir.join(META_FILE);
    let meta: Value = serde_json::from_slice(
        &std::fs::read(&meta_path)
            .with_context(|| format!("cannot read {}", meta_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", meta_path.display()))?;
    let (Some(issuer), Some(kid)) = (meta["issuer"].as_str(), meta["kid"].as_str()) else {
        bail!("{}: no issuer or kid", meta_path.display());
    };
    let key_path = dir.join(KEY_FILE);
    let pkcs8 = Zeroizing::new(
        std::fs::read(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?,
    );
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
        .map_err(|_| anyhow!("{}: not a P-256 PKCS#8 key", key_path.display()))?;
    let now = unix_now();
    let mut claims = json!({"iss": issuer, "sub": sub, "aud": aud,
                            "iat": now, "exp": now + ttl.as_secs()});
    if let Some(email) = email {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(true);
    }
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|_| anyhow!("cannot sign"))?;
    // A bearer credential: printed as the command's output only.
    let token = Zeroizing::new(format!("{input}.{}", b64(sig.as_ref())));
    println!("{}", token.as_str());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Init { dir, issuer } => init(dir, issuer),
        Command::IdToken {
            dir,
            sub,
            aud,
            email,
            ttl,
        } => id_token(dir, sub, aud, email.as_deref(), *ttl),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("travel-idp: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
