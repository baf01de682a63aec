//! SPIFFE ID and trust domain parsing: one table row per rule of the SPIFFE-ID standard, an
//! exhaustive character table, and property tests.

use proptest::prelude::*;
use signet_spiffe::id::{MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN};
use signet_spiffe::{IdError, SpiffeId, TrustDomain};

/// (input, expected trust domain and path, or the exact error).
type Row = (&'static str, Result<(&'static str, &'static str), IdError>);

const SPIFFE_ID_TABLE: &[Row] = &[
    // Valid.
    ("spiffe://example.org", Ok(("example.org", ""))),
    ("spiffe://example.org/path", Ok(("example.org", "/path"))),
    ("spiffe://example.org/a/b/c", Ok(("example.org", "/a/b/c"))),
    (
        "spiffe://trust-domain_1.example/Path-With.Mixed_Case/123",
        Ok(("trust-domain_1.example", "/Path-With.Mixed_Case/123")),
    ),
    ("spiffe://a/b", Ok(("a", "/b"))),
    ("spiffe://1.2.3.4/x", Ok(("1.2.3.4", "/x"))),
    ("spiffe://example.org/...", Ok(("example.org", "/..."))),
    (
        "spiffe://example.org/.hidden/..x",
        Ok(("example.org", "/.hidden/..x")),
    ),
    (
        "spiffe://example.org/spiffe/example.org",
        Ok(("example.org", "/spiffe/example.org")),
    ),
    // Empty input.
    ("", Err(IdError::Empty)),
    // Scheme: exactly `spiffe://`, lowercase.
    ("example.org/path", Err(IdError::WrongScheme)),
    ("SPIFFE://example.org/path", Err(IdError::WrongScheme)),
    ("Spiffe://example.org/path", Err(IdError::WrongScheme)),
    ("http://example.org/path", Err(IdError::WrongScheme)),
    ("spiffe:/example.org/path", Err(IdError::WrongScheme)),
    ("spiffe:example.org/path", Err(IdError::WrongScheme)),
    ("spiffe//example.org/path", Err(IdError::WrongScheme)),
    (" spiffe://example.org/path", Err(IdError::WrongScheme)),
    ("192.168.2.2:6688", Err(IdError::WrongScheme)),
    // Trust domain: present, lowercase, [a-z0-9.-_].
    ("spiffe://", Err(IdError::MissingTrustDomain)),
    ("spiffe:///path", Err(IdError::MissingTrustDomain)),
    ("spiffe:////path", Err(IdError::MissingTrustDomain)),
    (
        "spiffe://Example.org/path",
        Err(IdError::BadTrustDomainChar('E')),
    ),
    (
        "spiffe://EXAMPLE.ORG",
        Err(IdError::BadTrustDomainChar('E')),
    ),
    (
        "spiffe://exa mple.org/path",
        Err(IdError::BadTrustDomainChar(' ')),
    ),
    (
        "spiffe://exa+mple.org/path",
        Err(IdError::BadTrustDomainChar('+')),
    ),
    ("spiffe://[::1]/path", Err(IdError::BadTrustDomainChar('['))),
    (
        "spiffe://example.org\n/path",
        Err(IdError::BadTrustDomainChar('\n')),
    ),
    (
        "spiffe://exämple.org/path",
        Err(IdError::BadTrustDomainChar('ä')),
    ),
    // Port, userinfo.
    ("spiffe://example.org:8080/path", Err(IdError::Port)),
    ("spiffe://example.org:/path", Err(IdError::Port)),
    ("spiffe://example.org:8080", Err(IdError::Port)),
    ("spiffe://user@example.org/path", Err(IdError::UserInfo)),
    (
        "spiffe://user:password@example.org/path",
        Err(IdError::UserInfo),
    ),
    ("spiffe://@example.org", Err(IdError::UserInfo)),
    // Query, fragment.
    ("spiffe://example.org/path?query=1", Err(IdError::Query)),
    ("spiffe://example.org?query", Err(IdError::Query)),
    ("spiffe://example.org/path?", Err(IdError::Query)),
    ("spiffe://example.org/path#fragment", Err(IdError::Fragment)),
    ("spiffe://example.org#fragment", Err(IdError::Fragment)),
    (
        "spiffe://example.org/path?#fragment-1",
        Err(IdError::Fragment),
    ),
    // Percent-encoding, in the path and in the trust domain.
    ("spiffe://example.org/pa%20th", Err(IdError::PercentEncoded)),
    (
        "spiffe://example.org/path/elem%5uent",
        Err(IdError::PercentEncoded),
    ),
    (
        "spiffe://example.org/element%5",
        Err(IdError::PercentEncoded),
    ),
    ("spiffe://example%2eorg/path", Err(IdError::PercentEncoded)),
    // Empty segments, `.` and `..`, trailing slash.
    ("spiffe://example.org//path", Err(IdError::EmptySegment)),
    ("spiffe://example.org/a//b", Err(IdError::EmptySegment)),
    ("spiffe://example.org/", Err(IdError::TrailingSlash)),
    ("spiffe://example.org/path/", Err(IdError::TrailingSlash)),
    ("spiffe://example.org/.", Err(IdError::DotSegment)),
    ("spiffe://example.org/..", Err(IdError::DotSegment)),
    ("spiffe://example.org/a/./b", Err(IdError::DotSegment)),
    ("spiffe://example.org/a/../b", Err(IdError::DotSegment)),
    ("spiffe://example.org/a/..", Err(IdError::DotSegment)),
    // Path characters: [a-zA-Z0-9.-_] only (no sub-delims, no gen-delims, no non-ASCII).
    ("spiffe://example.org/pa th", Err(IdError::BadPathChar(' '))),
    ("spiffe://example.org/pa:th", Err(IdError::BadPathChar(':'))),
    ("spiffe://example.org/pa@th", Err(IdError::BadPathChar('@'))),
    (
        "spiffe://example.org/p!a$t&h",
        Err(IdError::BadPathChar('!')),
    ),
    (
        "spiffe://example.org/(e)l*e+m,e;n=t",
        Err(IdError::BadPathChar('(')),
    ),
    (
        "spiffe://example.org/path/elem[ent",
        Err(IdError::BadPathChar('[')),
    ),
    (
        "spiffe://example.org/path/elem]ent",
        Err(IdError::BadPathChar(']')),
    ),
    ("spiffe://example.org/café", Err(IdError::BadPathChar('é'))),
    ("spiffe://example.org/a\\b", Err(IdError::BadPathChar('\\'))),
    ("spiffe://example.org/a\0b", Err(IdError::BadPathChar('\0'))),
    (
        "spiffe://example.org/spiffe://example.org/path",
        Err(IdError::BadPathChar(':')),
    ),
];

#[test]
fn spiffe_id_table() {
    for (input, expected) in SPIFFE_ID_TABLE {
        let got = SpiffeId::parse(input);
        match expected {
            Ok((td, path)) => {
                let id = got.unwrap_or_else(|e| panic!("{input:?} rejected: {e}"));
                assert_eq!(id.trust_domain().name(), *td, "{input:?}");
                assert_eq!(id.path(), *path, "{input:?}");
                assert_eq!(
                    id.to_string(),
                    *input,
                    "{input:?} is not printed back as given"
                );
                assert_eq!(input.parse::<SpiffeId>().as_ref(), Ok(&id));
            }
            Err(e) => assert_eq!(got.as_ref(), Err(e), "{input:?}"),
        }
    }
}

/// `spiffe://` + a trust domain of `td_len` bytes + `/` + a path segment filling up to `total`.
fn id_of_len(td_len: usize, total: usize) -> String {
    let td = "t".repeat(td_len);
    let fill = total - "spiffe://".len() - td_len - 1;
    format!("spiffe://{td}/{}", "p".repeat(fill))
}

#[test]
fn id_of_exactly_2048_bytes_is_accepted() {
    let s = id_of_len(20, MAX_ID_LEN);
    assert_eq!(s.len(), 2048);
    let id = SpiffeId::parse(&s).unwrap();
    assert_eq!(id.to_string(), s);
}

#[test]
fn id_of_2049_bytes_is_too_long() {
    let s = id_of_len(20, MAX_ID_LEN + 1);
    assert_eq!(SpiffeId::parse(&s), Err(IdError::TooLong));
}

#[test]
fn length_counts_bytes_not_characters() {
    // 2047 bytes of valid ID plus one two-byte character: over the limit in bytes, so TooLong
    // (not the bad character) is reported.
    let s = format!("{}é", id_of_len(20, MAX_ID_LEN - 1));
    assert_eq!(s.len(), 2049);
    assert_eq!(SpiffeId::parse(&s), Err(IdError::TooLong));
}

#[test]
fn trust_domain_of_255_bytes_is_accepted_256_is_not() {
    let ok = id_of_len(MAX_TRUST_DOMAIN_LEN, 300);
    assert_eq!(
        SpiffeId::parse(&ok).unwrap().trust_domain().name().len(),
        255
    );
    let too_long = id_of_len(MAX_TRUST_DOMAIN_LEN + 1, 300);
    assert_eq!(SpiffeId::parse(&too_long), Err(IdError::TrustDomainTooLong));
    assert_eq!(
        TrustDomain::new(&"t".repeat(256)),
        Err(IdError::TrustDomainTooLong)
    );
    assert!(TrustDomain::new(&"t".repeat(255)).is_ok());
}

/// Every ASCII character (and a few others) in the trust domain and in a path segment.
#[test]
fn every_character_in_trust_domain_and_path() {
    let mut chars: Vec<char> = (0u8..=127).map(char::from).collect();
    chars.extend(['é', 'ä', '\u{202e}', '\u{feff}', '😀']);
    for c in chars {
        if c == '/' {
            continue; // a separator, not a character of a name
        }
        let td_expected = match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => Ok(()),
            ':' => Err(IdError::Port),
            '@' => Err(IdError::UserInfo),
            '%' => Err(IdError::PercentEncoded),
            '?' => Err(IdError::Query),
            '#' => Err(IdError::Fragment),
            other => Err(IdError::BadTrustDomainChar(other)),
        };
        let input = format!("spiffe://a{c}b/path");
        assert_eq!(
            SpiffeId::parse(&input).map(|_| ()),
            td_expected,
            "trust domain char {c:?}"
        );
        assert_eq!(
            TrustDomain::new(&format!("a{c}b")).map(|_| ()),
            td_expected,
            "bare trust domain char {c:?}"
        );

        let path_expected = match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => Ok(()),
            '%' => Err(IdError::PercentEncoded),
            '?' => Err(IdError::Query),
            '#' => Err(IdError::Fragment),
            other => Err(IdError::BadPathChar(other)),
        };
        let input = format!("spiffe://example.org/a{c}b");
        assert_eq!(
            SpiffeId::parse(&input).map(|_| ()),
            path_expected,
            "path char {c:?}"
        );
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            td.spiffe_id(&format!("/a{c}b")).map(|_| ()),
            path_expected,
            "path char {c:?} via TrustDomain::spiffe_id"
        );
    }
}

const TRUST_DOMAIN_TABLE: &[(&str, Result<&str, IdError>)] = &[
    ("example.org", Ok("example.org")),
    ("spiffe://example.org", Ok("example.org")),
    ("a", Ok("a")),
    ("my_td-1.example", Ok("my_td-1.example")),
    ("", Err(IdError::Empty)),
    ("spiffe://", Err(IdError::MissingTrustDomain)),
    ("Example.org", Err(IdError::BadTrustDomainChar('E'))),
    (
        "spiffe://Example.org",
        Err(IdError::BadTrustDomainChar('E')),
    ),
    ("example.org:8080", Err(IdError::Port)),
    ("user@example.org", Err(IdError::UserInfo)),
    ("example%2eorg", Err(IdError::PercentEncoded)),
    ("example.org/path", Err(IdError::BadTrustDomainChar('/'))),
    // A trust-domain ID must not carry a path: the trust domain is the whole authority.
    (
        "spiffe://example.org/path",
        Err(IdError::BadTrustDomainChar('/')),
    ),
    ("spiffe:/example.org", Err(IdError::WrongScheme)),
    ("http://example.org", Err(IdError::WrongScheme)),
    ("SPIFFE://example.org", Err(IdError::WrongScheme)),
    ("spiffe://example.org?x", Err(IdError::Query)),
];

#[test]
fn trust_domain_table() {
    for (input, expected) in TRUST_DOMAIN_TABLE {
        let got = TrustDomain::new(input);
        match expected {
            Ok(name) => {
                let td = got.unwrap_or_else(|e| panic!("{input:?} rejected: {e}"));
                assert_eq!(td.name(), *name);
                assert_eq!(td.to_string(), *name);
                assert_eq!(td.id_string(), format!("spiffe://{name}"));
                assert_eq!(input.parse::<TrustDomain>().as_ref(), Ok(&td));
            }
            Err(e) => assert_eq!(got.as_ref(), Err(e), "{input:?}"),
        }
    }
}

#[test]
fn trust_domain_spiffe_id_table() {
    let td = TrustDomain::new("example.org").unwrap();
    let cases: &[(&str, Result<&str, IdError>)] = &[
        ("", Ok("spiffe://example.org")),
        ("/a", Ok("spiffe://example.org/a")),
        ("/a/B/c-1", Ok("spiffe://example.org/a/B/c-1")),
        ("a", Err(IdError::PathNotAbsolute)),
        ("/", Err(IdError::TrailingSlash)),
        ("/a/", Err(IdError::TrailingSlash)),
        ("//a", Err(IdError::EmptySegment)),
        ("/./a", Err(IdError::DotSegment)),
        ("/a/..", Err(IdError::DotSegment)),
        ("/a?b", Err(IdError::Query)),
        ("/a#b", Err(IdError::Fragment)),
        ("/a%2Fb", Err(IdError::PercentEncoded)),
        ("/a b", Err(IdError::BadPathChar(' '))),
    ];
    for (path, expected) in cases {
        let got = td.spiffe_id(path).map(|id| id.to_string());
        assert_eq!(got.as_deref(), expected.as_ref().map(|s| *s), "{path:?}");
    }
    // The 2048-byte limit applies to IDs built this way too.
    let fill = MAX_ID_LEN - "spiffe://example.org/".len();
    let ok = td.spiffe_id(&format!("/{}", "p".repeat(fill))).unwrap();
    assert_eq!(ok.to_string().len(), MAX_ID_LEN);
    assert_eq!(
        td.spiffe_id(&format!("/{}", "p".repeat(fill + 1))),
        Err(IdError::TooLong)
    );
}

#[test]
fn membership_and_accessors() {
    let id = SpiffeId::parse("spiffe://example.org/ns/prod").unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    assert!(id.is_member_of(&td));
    assert!(!id.is_member_of(&TrustDomain::new("example.com").unwrap()));
    assert!(!id.is_member_of(&TrustDomain::new("sub.example.org").unwrap()));
    assert_eq!(id.trust_domain(), &td);
    assert_eq!(id.path(), "/ns/prod");
}

#[test]
fn serde_uses_the_string_forms_and_validates() {
    let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
    assert_eq!(
        serde_json::to_string(&id).unwrap(),
        "\"spiffe://example.org/a\""
    );
    assert_eq!(
        serde_json::from_str::<SpiffeId>("\"spiffe://example.org/a\"").unwrap(),
        id
    );
    let err = serde_json::from_str::<SpiffeId>("\"spiffe://example.org/a/\"").unwrap_err();
    assert!(err.to_string().contains("must not end with '/'"), "{err}");

    let td = TrustDomain::new("example.org").unwrap();
    assert_eq!(serde_json::to_string(&td).unwrap(), "\"example.org\"");
    assert_eq!(
        serde_json::from_str::<TrustDomain>("\"spiffe://example.org\"").unwrap(),
        td
    );
    assert!(serde_json::from_str::<TrustDomain>("\"Example.org\"").is_err());
}

#[test]
fn error_messages_name_the_rule() {
    let msg = |s: &str| SpiffeId::parse(s).unwrap_err().to_string();
    assert!(msg("spiffe://Example.org").contains("'E'"));
    assert!(msg("spiffe://example.org/a b").contains("' '"));
    assert!(msg("spiffe://example.org:1").contains("port"));
    assert!(msg(&id_of_len(20, 3000)).contains("2048"));
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,16}".prop_filter("`.` and `..` are not segments", |s| s != "." && s != "..")
}

proptest! {
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = SpiffeId::parse(&s);
        let _ = TrustDomain::new(&s);
    }

    #[test]
    fn parse_never_panics_after_the_scheme(s in "spiffe://\\PC{0,64}") {
        let _ = SpiffeId::parse(&s);
        let _ = TrustDomain::new(&s);
    }

    /// Whatever is accepted is canonical: it prints back exactly as given.
    #[test]
    fn accepted_ids_print_back_unchanged(s in "spiffe://[a-zA-Z0-9._:@%?#/-]{0,40}") {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn valid_ids_round_trip(
        td in "[a-z0-9._-]{1,63}",
        segments in proptest::collection::vec(segment(), 0..8),
    ) {
        let path: String = segments.iter().map(|s| format!("/{s}")).collect();
        let input = format!("spiffe://{td}{path}");
        let id = SpiffeId::parse(&input).unwrap();
        prop_assert_eq!(id.trust_domain().name(), td.as_str());
        prop_assert_eq!(id.path(), path.as_str());
        prop_assert_eq!(id.to_string(), input);
        prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id.clone());
        let td = TrustDomain::new(&td).unwrap();
        prop_assert_eq!(td.spiffe_id(&path).unwrap(), id.clone());
        prop_assert_eq!(TrustDomain::new(&td.id_string()).unwrap(), td);
    }
}
