//! The X509-SVID rules (SPIFFE X509-SVID standard), for leaves and signing certificates, and the
//! verification of an X509-SVID chain against the bundle of its trust domain.
//!
//! Every certificate is first parsed strictly: DER with no trailing data, no extension present
//! twice, and every extension that the parser knows well-formed (a malformed basic constraints or
//! key usage must not read as "absent").
//!
//! Leaf rules ([`validate_x509_svid_leaf`]), each with its own [`SvidError`] variant:
//! 1. exactly one URI SAN, and it is a valid SPIFFE ID (other SAN types are allowed);
//! 2. the SPIFFE ID has a path (X509-SVID 3.1);
//! 3. basic constraints, if present, have `cA=false` (4.1);
//! 4. key usage is present and critical (4.3), has `digitalSignature`, and has neither
//!    `keyCertSign` nor `cRLSign` (4.3, 5.2);
//! 5. extended key usage, if present, has both `serverAuth` and `clientAuth` (4.4);
//! 6. if the subject is empty, the SAN extension is critical (3.1, RFC 5280 4.1.2.6).
//!
//! Signing-certificate rules ([`validate_signing_certificate`]): basic constraints with `cA=true`,
//! key usage present, critical and with `keyCertSign`, a non-empty subject (RFC 5280 4.1.2.6), and,
//! if the certificate has a URI SAN (i.e. it is itself an SVID), exactly one, a SPIFFE ID without a
//! path (3.2).
//!
//! [`verify_x509_svid`] applies the leaf rules, requires the leaf's trust domain to be the bundle's,
//! then runs RFC 5280 path validation with `webpki` (see its documentation for the choices made).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::Bundle;
use crate::id::{IdError, SpiffeId, TrustDomain};

/// Why a certificate or chain is not a valid X509-SVID. Each variant names one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The bytes are not one DER X.509 certificate.
    #[error("certificate is not valid DER X.509: {0}")]
    Malformed(String),
    /// An extension appears twice (RFC 5280 4.2).
    #[error("certificate contains extension {0} more than once")]
    DuplicateExtension(String),
    /// An extension could not be parsed.
    #[error("certificate extension {0} is malformed")]
    MalformedExtension(String),
    /// The certificate has no URI SAN.
    #[error(
        "certificate has no URI SAN: an X509-SVID carries its SPIFFE ID as exactly one URI SAN"
    )]
    NoUriSan,
    /// The certificate has more than one URI SAN.
    #[error("certificate has {0} URI SANs: an X509-SVID must have exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN {uri:?} is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI SAN as found in the certificate.
        uri: String,
        /// The rule of the SPIFFE-ID standard it breaks.
        reason: IdError,
    },
    /// A leaf's SPIFFE ID has no path.
    #[error("leaf SPIFFE ID {0} has no path: a leaf X509-SVID must identify a workload")]
    LeafIdWithoutPath(SpiffeId),
    /// A leaf has basic constraints `cA=true`.
    #[error("leaf certificate has basic constraints cA=true")]
    LeafIsCa,
    /// The key usage extension is absent.
    #[error("certificate has no key usage extension")]
    MissingKeyUsage,
    /// The key usage extension is not critical.
    #[error("key usage extension is not marked critical")]
    KeyUsageNotCritical,
    /// A leaf's key usage lacks `digitalSignature`.
    #[error("leaf key usage does not include digitalSignature")]
    LeafMissingDigitalSignature,
    /// A leaf's key usage has `keyCertSign`.
    #[error("leaf key usage includes keyCertSign")]
    LeafKeyCertSign,
    /// A leaf's key usage has `cRLSign`.
    #[error("leaf key usage includes cRLSign")]
    LeafCrlSign,
    /// A leaf's extended key usage lacks `serverAuth`.
    #[error("leaf extended key usage is present but does not include serverAuth")]
    LeafEkuMissingServerAuth,
    /// A leaf's extended key usage lacks `clientAuth`.
    #[error("leaf extended key usage is present but does not include clientAuth")]
    LeafEkuMissingClientAuth,
    /// A leaf's subject is empty and its SAN extension is not critical.
    #[error("leaf subject is empty but the SAN extension is not marked critical")]
    SanNotCriticalWithEmptySubject,
    /// A signing certificate lacks basic constraints `cA=true`.
    #[error("signing certificate does not have basic constraints cA=true")]
    CaFlagNotSet,
    /// A signing certificate's key usage lacks `keyCertSign`.
    #[error("signing certificate key usage does not include keyCertSign")]
    CaMissingKeyCertSign,
    /// A signing certificate's SPIFFE ID has a path.
    #[error("signing certificate SPIFFE ID {0} has a path: a CA's ID must not have one")]
    CaIdHasPath(SpiffeId),
    /// A signing certificate's subject is empty.
    #[error("signing certificate has an empty subject")]
    CaEmptySubject,
    /// The chain is empty.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// The leaf's trust domain is not the bundle's.
    #[error("SPIFFE ID {id} is not in trust domain {bundle}, the trust domain of the bundle")]
    TrustDomainMismatch {
        /// The leaf's SPIFFE ID.
        id: SpiffeId,
        /// The bundle's trust domain.
        bundle: TrustDomain,
    },
    /// The bundle has no X.509 authority.
    #[error("the bundle of trust domain {0} has no X.509 authority")]
    NoX509Authorities(TrustDomain),
    /// An X.509 authority of the bundle cannot serve as a trust anchor.
    #[error("X.509 authority {index} of the bundle is not a usable trust anchor: {reason}")]
    BadX509Authority {
        /// Index in [`Bundle::x509_authorities`].
        index: usize,
        /// webpki's complaint.
        reason: String,
    },
    /// A certificate of the chain has expired.
    #[error("a certificate of the chain has expired")]
    Expired,
    /// A certificate of the chain is not valid yet.
    #[error("a certificate of the chain is not valid yet")]
    NotYetValid,
    /// The chain does not lead to an X.509 authority of the bundle.
    #[error("the chain does not lead to an X.509 authority of the bundle")]
    UnknownIssuer,
    /// A signature in the chain is invalid.
    #[error("a signature in the chain is invalid")]
    BadSignature,
    /// Path validation failed for another reason.
    #[error("path validation failed: {0}")]
    PathValidation(String),
}

/// Parses one certificate strictly (see the module documentation).
fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed(format!(
            "{} bytes of trailing data",
            rest.len()
        )));
    }
    let mut seen = HashSet::new();
    for ext in cert.extensions() {
        if !seen.insert(ext.oid.clone()) {
            return Err(SvidError::DuplicateExtension(ext.oid.to_id_string()));
        }
        if let ParsedExtension::ParseError { .. } = ext.parsed_extension() {
            return Err(SvidError::MalformedExtension(ext.oid.to_id_string()));
        }
    }
    Ok(cert)
}

/// The URI SANs of a certificate and whether the SAN extension is critical.
fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> (Vec<&'a str>, bool) {
    let mut uris = Vec::new();
    let mut critical = false;
    for ext in cert.extensions() {
        if ext.oid != OID_X509_EXT_SUBJECT_ALT_NAME {
            continue;
        }
        critical = ext.critical;
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push(*uri);
                }
            }
        }
    }
    (uris, critical)
}

/// Whether basic constraints are present with `cA=true`.
fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.extensions().iter().any(|ext| {
        ext.oid == OID_X509_EXT_BASIC_CONSTRAINTS
            && matches!(ext.parsed_extension(), ParsedExtension::BasicConstraints(bc) if bc.ca)
    })
}

fn one_spiffe_id(uris: &[&str]) -> Result<SpiffeId, SvidError> {
    match uris {
        [] => Err(SvidError::NoUriSan),
        [uri] => SpiffeId::parse(uri).map_err(|reason| SvidError::InvalidSpiffeId {
            uri: (*uri).to_owned(),
            reason,
        }),
        more => Err(SvidError::MultipleUriSans(more.len())),
    }
}

fn subject_is_empty(cert: &X509Certificate<'_>) -> bool {
    cert.subject().iter().next().is_none()
}

/// The SPIFFE ID of a certificate: its one URI SAN, which must be a valid SPIFFE ID.
///
/// This checks only the ID; use [`validate_x509_svid_leaf`] or [`verify_x509_svid`] to authenticate.
pub fn spiffe_id_from_cert(der: &[u8]) -> Result<SpiffeId, SvidError> {
    let cert = parse(der)?;
    one_spiffe_id(&uri_sans(&cert).0)
}

/// Checks every leaf rule of the X509-SVID standard (see the module documentation) and returns the
/// leaf's SPIFFE ID. Does not check signatures or validity dates.
pub fn validate_x509_svid_leaf(der: &[u8]) -> Result<SpiffeId, SvidError> {
    let cert = parse(der)?;
    let (uris, san_critical) = uri_sans(&cert);
    let id = one_spiffe_id(&uris)?;
    if id.path().is_empty() {
        return Err(SvidError::LeafIdWithoutPath(id));
    }
    if is_ca(&cert) {
        return Err(SvidError::LeafIsCa);
    }
    let key_usage = cert
        .key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?
        .ok_or(SvidError::MissingKeyUsage)?;
    if !key_usage.critical {
        return Err(SvidError::KeyUsageNotCritical);
    }
    if !key_usage.value.digital_signature() {
        return Err(SvidError::LeafMissingDigitalSignature);
    }
    if key_usage.value.key_cert_sign() {
        return Err(SvidError::LeafKeyCertSign);
    }
    if key_usage.value.crl_sign() {
        return Err(SvidError::LeafCrlSign);
    }
    if let Some(eku) = cert
        .extended_key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?
    {
        if !eku.value.server_auth {
            return Err(SvidError::LeafEkuMissingServerAuth);
        }
        if !eku.value.client_auth {
            return Err(SvidError::LeafEkuMissingClientAuth);
        }
    }
    if subject_is_empty(&cert) && !san_critical {
        return Err(SvidError::SanNotCriticalWithEmptySubject);
    }
    Ok(id)
}

/// Checks every signing-certificate (CA) rule of the X509-SVID standard (see the module
/// documentation). A CA without any URI SAN is accepted (the standard only says it SHOULD be an
/// SVID); one with URI SANs must carry exactly one, a SPIFFE ID without a path.
pub fn validate_signing_certificate(der: &[u8]) -> Result<(), SvidError> {
    let cert = parse(der)?;
    if !is_ca(&cert) {
        return Err(SvidError::CaFlagNotSet);
    }
    let key_usage = cert
        .key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?
        .ok_or(SvidError::MissingKeyUsage)?;
    if !key_usage.critical {
        return Err(SvidError::KeyUsageNotCritical);
    }
    if !key_usage.value.key_cert_sign() {
        return Err(SvidError::CaMissingKeyCertSign);
    }
    if subject_is_empty(&cert) {
        return Err(SvidError::CaEmptySubject);
    }
    let (uris, _) = uri_sans(&cert);
    if !uris.is_empty() {
        let id = one_spiffe_id(&uris)?;
        if !id.path().is_empty() {
            return Err(SvidError::CaIdHasPath(id));
        }
    }
    Ok(())
}

/// Verifies an X509-SVID chain (leaf first, then intermediates) against the bundle of the leaf's
/// trust domain, at time `now`, and returns the leaf's SPIFFE ID.
///
/// 1. The leaf must pass [`validate_x509_svid_leaf`].
/// 2. The leaf's trust domain must be `bundle.trust_domain` (a bundle never vouches for another
///    trust domain, even if its CA signed the certificate).
/// 3. RFC 5280 path validation with `webpki`: the bundle's X.509 authorities are the trust anchors,
///    `chain_der[1..]` the candidate intermediates, every signature algorithm webpki supports with
///    aws-lc-rs, no revocation checking, and no DNS name or IP check. webpki is asked for the
///    client-auth purpose: it requires `clientAuth` in every certificate of the path that has an
///    EKU extension. Rule 1 already requires `clientAuth` *and* `serverAuth` in a leaf EKU, so the
///    purpose only matters for an intermediate that restricts EKU to `serverAuth`, which SPIFFE
///    signing certificates must not do to be usable for mutual TLS.
///
/// Intermediates are not checked against [`validate_signing_certificate`]: path validation already
/// requires `cA=true` and `keyCertSign`, and upstream CAs need not be SVIDs.
pub fn verify_x509_svid(
    chain_der: &[Vec<u8>],
    bundle: &Bundle,
    now: SystemTime,
) -> Result<SpiffeId, SvidError> {
    let (leaf, intermediates) = chain_der.split_first().ok_or(SvidError::EmptyChain)?;
    let id = validate_x509_svid_leaf(leaf)?;
    if !id.is_member_of(&bundle.trust_domain) {
        return Err(SvidError::TrustDomainMismatch {
            id,
            bundle: bundle.trust_domain.clone(),
        });
    }
    if bundle.x509_authorities.is_empty() {
        return Err(SvidError::NoX509Authorities(bundle.trust_domain.clone()));
    }
    let authority_ders: Vec<CertificateDer<'_>> = bundle
        .x509_authorities
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let mut anchors = Vec::with_capacity(authority_ders.len());
    for (index, der) in authority_ders.iter().enumerate() {
        let anchor =
            webpki::anchor_from_trusted_cert(der).map_err(|e| SvidError::BadX509Authority {
                index,
                reason: e.to_string(),
            })?;
        anchors.push(anchor);
    }
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&leaf_der).map_err(map_webpki_error)?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(map_webpki_error)?;
    Ok(id)
}

fn map_webpki_error(e: webpki::Error) -> SvidError {
    match e {
        webpki::Error::CertExpired { .. } => SvidError::Expired,
        webpki::Error::CertNotValidYet { .. } => SvidError::NotYetValid,
        webpki::Error::UnknownIssuer => SvidError::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => SvidError::BadSignature,
        other => SvidError::PathValidation(other.to_string()),
    }
}
