use super::*;

fn td(s: &str) -> TrustDomain {
    TrustDomain::new(s).unwrap()
}

/// A self-signed CA certificate (DER) whose URI SAN is `uri` (none when `None`).
fn ca_cert(uri: Option<&str>) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    if let Some(u) = uri {
        params.subject_alt_names = vec![rcgen::SanType::URI(u.try_into().unwrap())];
    }
    params.self_signed(&key).unwrap().der().to_vec()
}

fn bundle_json(trust_domain: &str, certs: Vec<Vec<u8>>, sequence: u64) -> String {
    let mut bundle = Bundle::new(td(trust_domain));
    bundle.x509_authorities = certs;
    bundle.sequence = sequence;
    bundle.refresh_hint = Some(60);
    bundle.to_json().unwrap()
}

#[test]
fn endpoint_urls() {
    let u = EndpointUrl::parse("https://bundles.partner.org:8443/spiffe?x=1").unwrap();
    assert_eq!(u.host(), "bundles.partner.org");
    assert_eq!(u.port(), 8443);
    assert_eq!(u.path_and_query(), "/spiffe?x=1");
    let u = EndpointUrl::parse("https://127.0.0.1").unwrap();
    assert_eq!((u.port(), u.path_and_query()), (443, "/"));
    let u = EndpointUrl::parse("https://[::1]:9443/").unwrap();
    assert_eq!((u.host(), u.port()), ("::1", 9443));

    for (bad, why) in [
        ("http://partner.org/", "scheme \"http\" is not allowed"),
        ("partner.org/bundle", "not a URL"),
        ("/bundle", "must be an absolute https:// URL"),
        (
            "https://user:pw@partner.org/",
            "must not carry user information",
        ),
        ("https://partner.org/#frag", "must not have a fragment"),
        ("https:///bundle", "not a URL"),
        (
            "https://bad_host!/",
            "host \"bad_host!\" is not a DNS name or an IP address",
        ),
        ("", "not a URL"),
    ] {
        let e = EndpointUrl::parse(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn profiles_check_their_options() {
    let p = Profile::from_parts(
        "https_spiffe",
        Some("spiffe://partner.org/signet/issuer"),
        None,
    )
    .unwrap();
    assert_eq!(p.name(), "https_spiffe");
    assert_eq!(
        Profile::from_parts("https_web", None, None).unwrap(),
        Profile::HttpsWeb {
            ca_bundle_pem: None
        }
    );
    let e = Profile::from_parts("https_spiffe", None, None).unwrap_err();
    assert!(matches!(e, FederationError::MissingEndpointId), "{e}");
    let e = Profile::from_parts("https_spiffe", Some("spiffe://Partner.org/x"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("endpoint SPIFFE ID \"spiffe://Partner.org/x\""),
        "{e}"
    );
    let e = Profile::from_parts("https_web", Some("spiffe://partner.org/x"), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "endpoint_spiffe_id is only used with profile https_spiffe"
    );
    let e = Profile::from_parts("https_spiffe", Some("spiffe://p.org/x"), Some("pem".into()))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "ca_bundle is only used with profile https_web");
    let e = Profile::from_parts("https_web", None, Some("not pem".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no CERTIFICATE block"), "{e}");
    let e = Profile::from_parts("http", None, None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "profile \"http\": expected https_web or https_spiffe");

    let der = ca_cert(None);
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der));
    assert!(Profile::from_parts("https_web", None, Some(pem)).is_ok());
}

#[test]
fn relationships_are_validated_against_the_own_trust_domain() {
    let own = td("example.org");
    let rel = |t: &str, id: &str| Relationship {
        trust_domain: td(t),
        url: EndpointUrl::parse("https://127.0.0.1:8443/").unwrap(),
        profile: Profile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::parse(id).unwrap(),
        },
    };
    assert!(
        rel("partner.org", "spiffe://partner.org/signet/issuer")
            .validate(&own)
            .is_ok()
    );
    let e = rel("example.org", "spiffe://example.org/signet/issuer")
        .validate(&own)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is the issuer's own trust domain"), "{e}");
    let e = rel("partner.org", "spiffe://other.org/signet/issuer")
        .validate(&own)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "endpoint SPIFFE ID spiffe://other.org/signet/issuer is not in trust domain partner.org"
        ),
        "{e}"
    );
}

#[test]
fn stored_form_round_trips() {
    let rel = Relationship {
        trust_domain: td("partner.org"),
        url: EndpointUrl::parse("https://partner.org/").unwrap(),
        profile: Profile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::parse("spiffe://partner.org/signet/issuer").unwrap(),
        },
    };
    let stored = rel.to_stored(1, 2);
    assert_eq!(stored.profile, "https_spiffe");
    assert_eq!(Relationship::from_stored(&stored).unwrap(), rel);
    let mut corrupt = stored.clone();
    corrupt.profile = "ftp".into();
    assert!(Relationship::from_stored(&corrupt).is_err());
}

#[test]
fn poll_intervals_are_bounded() {
    assert_eq!(poll_interval(Some(0), true), MIN_POLL_INTERVAL);
    assert_eq!(poll_interval(Some(5), true), Duration::from_secs(5));
    assert_eq!(poll_interval(Some(10 * 86400), true), MAX_POLL_INTERVAL);
    assert_eq!(poll_interval(None, true), DEFAULT_POLL_INTERVAL);
    assert_eq!(poll_interval(None, false), MAX_RETRY_INTERVAL);
    assert_eq!(poll_interval(Some(2), false), Duration::from_secs(2));
}

#[test]
fn fetched_bundles_are_checked() {
    let partner = td("partner.org");
    let good = bundle_json(
        "partner.org",
        vec![ca_cert(Some("spiffe://partner.org"))],
        5,
    );
    let current = check_bundle(&partner, good.as_bytes(), None).unwrap();
    assert_eq!(current.sequence, 5);

    // Same or higher sequence: accepted. An upstream root without a SPIFFE ID: accepted.
    let same = bundle_json("partner.org", vec![ca_cert(None)], 5);
    assert!(check_bundle(&partner, same.as_bytes(), Some(&current)).is_ok());
    let newer = bundle_json(
        "partner.org",
        vec![ca_cert(Some("spiffe://partner.org"))],
        6,
    );
    assert_eq!(
        check_bundle(&partner, newer.as_bytes(), Some(&current))
            .unwrap()
            .sequence,
        6
    );

    // Lower sequence.
    let older = bundle_json(
        "partner.org",
        vec![ca_cert(Some("spiffe://partner.org"))],
        4,
    );
    assert_eq!(
        check_bundle(&partner, older.as_bytes(), Some(&current)).unwrap_err(),
        PollError::LowerSequence { got: 4, stored: 5 }
    );

    // Garbage.
    let e = check_bundle(&partner, b"<html>oops</html>", Some(&current)).unwrap_err();
    assert!(
        matches!(e, PollError::Bundle(BundleError::Json(_))),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "the endpoint did not serve a valid SPIFFE bundle: bundle is not valid JSON"
        ),
        "{e}"
    );
    let e = check_bundle(&partner, br#"{"no_keys": 1}"#, None).unwrap_err();
    assert_eq!(e, PollError::Bundle(BundleError::MissingKeys));

    // A CA of another trust domain (second authority).
    let foreign = bundle_json(
        "partner.org",
        vec![
            ca_cert(Some("spiffe://partner.org")),
            ca_cert(Some("spiffe://evil.org")),
        ],
        9,
    );
    let e = check_bundle(&partner, foreign.as_bytes(), Some(&current)).unwrap_err();
    assert_eq!(
        e,
        PollError::WrongTrustDomain {
            expected: "partner.org".into(),
            found: "evil.org".into(),
            index: 1
        }
    );
    assert_eq!(
        e.to_string(),
        "the bundle is not for trust domain partner.org: its X.509 authority 1 is a CA of trust domain evil.org"
    );
}

#[test]
fn bootstrap_bundles_parse_as_json_or_pem() {
    let partner = td("partner.org");
    let der = ca_cert(Some("spiffe://partner.org"));
    let json = bundle_json("partner.org", vec![der.clone()], 3);
    let b = parse_bundle(&partner, json.as_bytes()).unwrap();
    assert_eq!((b.sequence, b.x509_authorities.len()), (3, 1));
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der));
    let b = parse_bundle(&partner, pem.as_bytes()).unwrap();
    assert_eq!(b.x509_authorities.len(), 1);
    let e = parse_bundle(&partner, b"nothing").unwrap_err().to_string();
    assert!(e.starts_with("bundle of partner.org:"), "{e}");
    let foreign = Bundle::from_json(
        &partner,
        bundle_json("partner.org", vec![ca_cert(Some("spiffe://evil.org"))], 1).as_bytes(),
    )
    .unwrap();
    assert!(check_trust_domain(&foreign).is_err());
}

#[test]
fn system_roots_are_found_or_explained() {
    match system_roots_pem() {
        Ok(pem) => assert!(pem.contains("BEGIN CERTIFICATE")),
        Err(e) => assert!(e.contains("no system CA roots found"), "{e}"),
    }
}
