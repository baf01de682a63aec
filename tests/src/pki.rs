//! Test PKI: a throwaway web certificate authority and server certificates for `localhost`.

// Only tests use it: failing to build a test certificate must abort the test.
#![allow(clippy::expect_used)]

/// A web PKI certificate authority made for one test (ECDSA P-256).
pub struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    /// The CA certificate, DER.
    pub der: Vec<u8>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new self-signed CA.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("test PKI");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("test PKI");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Signet test web CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("test PKI");
        Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    /// A server certificate for localhost and 127.0.0.1: (chain PEM, key PEM, leaf DER).
    pub fn server(&self) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("test PKI");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("test PKI");
        params.subject_alt_names.push(rcgen::SanType::IpAddress(
            "127.0.0.1".parse().expect("test PKI"),
        ));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("test PKI");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}
