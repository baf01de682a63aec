//! The upstream CA: a certificate chain and the key of its first certificate, loaded from PEM
//! files. In upstream mode every Signet CA is an intermediate signed by this key.

use std::fmt;
use std::path::Path;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::cert::{cert_key_id, verify_cert_signature};
use crate::keys::SigningKey;
use crate::{CaError, UpstreamConfig};

/// A loaded and checked upstream CA.
pub(crate) struct Upstream {
    /// The upstream private key (of `chain[0]`).
    pub(crate) key: SigningKey,
    /// The certificates of the PEM file in order: the upstream CA first.
    pub(crate) chain: Vec<Vec<u8>>,
    /// Subject Name DER of `chain[0]`.
    pub(crate) subject_der: Vec<u8>,
    /// Key identifier of `chain[0]`.
    pub(crate) key_id: Vec<u8>,
    /// Validity of `chain[0]`, Unix seconds.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("key", &self.key)
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::Upstream {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, CaError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| CaError::UpstreamRead {
            path: path.to_path_buf(),
            source,
        })
}

/// Loads and checks the upstream files: every certificate parses, the first is a CA allowed to
/// sign CA certificates and valid at `now`, each certificate is signed by the next one, and the
/// key matches the first certificate.
pub(crate) fn load(cfg: &UpstreamConfig, now: i64) -> Result<Upstream, CaError> {
    let cert_path = &cfg.cert_path;
    let key_path = &cfg.key_path;

    let cert_pem = read(cert_path)?;
    let blocks = pem::parse_many(&cert_pem[..])
        .map_err(|e| bad(cert_path, format!("not a PEM file: {e}")))?;
    let chain: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if chain.is_empty() {
        return Err(bad(cert_path, "no CERTIFICATE block found"));
    }
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| {
            bad(
                cert_path,
                format!("certificate #{} does not parse: {e}", i + 1),
            )
        })?;
        if !rest.is_empty() {
            return Err(bad(
                cert_path,
                format!("certificate #{} has trailing data", i + 1),
            ));
        }
        parsed.push(cert);
    }
    for i in 0..parsed.len().saturating_sub(1) {
        let (child, parent) = (&parsed[i], &parsed[i + 1]);
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(bad(
                cert_path,
                format!(
                    "certificate #{} (issuer {}) is not issued by certificate #{} (subject {}); \
                     put the upstream CA first and its issuers after it, in order",
                    i + 1,
                    child.issuer(),
                    i + 2,
                    parent.subject()
                ),
            ));
        }
        verify_cert_signature(child, parent.public_key()).map_err(|e| {
            bad(
                cert_path,
                format!(
                    "certificate #{} is not signed by certificate #{}: {e}",
                    i + 1,
                    i + 2
                ),
            )
        })?;
    }
    let Some(first) = parsed.first() else {
        return Err(bad(cert_path, "no CERTIFICATE block found"));
    };
    let mut is_ca = false;
    for ext in first.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                is_ca = bc.ca;
                if bc.path_len_constraint == Some(0) {
                    return Err(bad(
                        cert_path,
                        "the upstream CA has pathLenConstraint 0, so it cannot sign the Signet \
                         intermediate CA",
                    ));
                }
            }
            ParsedExtension::KeyUsage(ku) if !ku.key_cert_sign() => {
                return Err(bad(
                    cert_path,
                    "the upstream certificate's key usage lacks keyCertSign",
                ));
            }
            _ => {}
        }
    }
    if !is_ca {
        return Err(bad(
            cert_path,
            format!(
                "the first certificate ({}) is not a CA certificate (basicConstraints cA=true \
                 is required)",
                first.subject()
            ),
        ));
    }
    let not_before = first.validity().not_before.timestamp();
    let not_after = first.validity().not_after.timestamp();
    if now >= not_after {
        return Err(bad(
            cert_path,
            format!(
                "the upstream CA certificate expired at {}",
                first.validity().not_after
            ),
        ));
    }

    let key_pem = read(key_path)?;
    let key_block = pem::parse(&key_pem[..]).map_err(|e| CaError::UpstreamKey {
        path: key_path.clone(),
        reason: format!("not a PEM file: {e}"),
    })?;
    if key_block.tag() != "PRIVATE KEY" {
        return Err(CaError::UpstreamKey {
            path: key_path.clone(),
            reason: format!(
                "expected an unencrypted PKCS#8 'PRIVATE KEY' PEM block, found '{}' (convert \
                 with `openssl pkcs8 -topk8 -nocrypt`)",
                key_block.tag()
            ),
        });
    }
    let key_der = Zeroizing::new(key_block.into_contents());
    let key = SigningKey::from_pkcs8(&key_der, None).map_err(|reason| CaError::UpstreamKey {
        path: key_path.clone(),
        reason,
    })?;
    if key.public_key_bits() != &first.public_key().subject_public_key.data[..] {
        return Err(CaError::UpstreamKeyMismatch {
            key_path: key_path.clone(),
            cert_path: cert_path.clone(),
        });
    }
    let subject_der = first.subject().as_raw().to_vec();
    let key_id = cert_key_id(first);
    Ok(Upstream {
        key,
        chain,
        subject_der,
        key_id,
        not_before,
        not_after,
    })
}
