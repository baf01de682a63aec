//! Certificate signing requests: only the public key is taken from them.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::CaError;
use crate::cert::{validate_spki, verification_algorithm};

/// Verifies the CSR's signature and returns ONLY its public key (SubjectPublicKeyInfo DER).
///
/// Everything else the CSR requests (subject, SANs, CA=true, key usages, other extensions) is
/// ignored by design: the X509-SVID profile is decided by the CA, never by the requester.
///
/// Errors: [`CaError::InvalidCsr`] for anything that is not a DER CSR,
/// [`CaError::CsrSignature`] when the signature does not verify with the CSR's own key or uses
/// an unsupported algorithm (SHA-1, RSA-PSS, ...), and [`CaError::UnsupportedKeyAlgorithm`] /
/// [`CaError::InvalidPublicKey`] for keys an X509-SVID cannot carry.
pub fn public_key_from_csr(csr_der: &[u8]) -> Result<Vec<u8>, CaError> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| CaError::InvalidCsr(format!("not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCsr(
            "trailing data after the request".to_string(),
        ));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    // Validate the key first so that an unsupported key type gets its own precise error.
    validate_spki(spki.raw)?;
    let alg = verification_algorithm(csr.signature_algorithm.algorithm.as_bytes(), spki)
        .map_err(CaError::CsrSignature)?;
    aws_lc_rs::signature::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| {
            CaError::CsrSignature("the signature does not verify with the request's key".into())
        })?;
    Ok(spki.raw.to_vec())
}
