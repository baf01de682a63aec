//! Validation of registration entries, selectors and the IDs the admin API accepts.
//!
//! Pure functions: nothing here touches the store. The admin API validates every entry with
//! [`validate_entry`] before storing it, so an invalid entry is never stored, not even partly.
//!
//! Rules (also in `docs/cli.md`):
//! - `spiffe_id` and `parent_id`: valid SPIFFE IDs of the issuer's trust domain with a non-empty
//!   path; `spiffe_id` must not be under `/signet/` (reserved for the issuer and its agents), except
//!   for alias entries made by the issuer itself ([`EntryKind::Alias`]).
//! - selectors: at least one (alias entries may have none), at most [`MAX_SELECTORS`], each
//!   `type:value` with a type of `[a-z0-9_-]` and a non-empty value without control characters;
//!   stored sorted and de-duplicated.
//! - `x509_svid_ttl`: 0 (the default) or 1 s up to the CA TTL; `jwt_svid_ttl`: 0 or 1 s up to 24 h.
//! - `dns_names`: RFC 1123 host names, a `*` only as the whole leftmost label; sorted, de-duplicated.
//! - `hint`: at most [`MAX_HINT_LEN`] bytes; `federates_with`: valid trust domains other than ours.
//! - `expires_at`: in the future.
//!
//! The audiences of a JWT-SVID ([`validate_audiences`], node API `NewJWTSVID` and admin
//! `MintJwtSvid`): at least one, at most [`MAX_AUDIENCES`], none empty, each at most
//! [`MAX_AUDIENCE_LEN`] bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::{NewEntry, Selector};

/// Path prefix reserved for the issuer (`/signet/issuer`) and agents (`/signet/agent/...`).
pub const RESERVED_PATH_PREFIX: &str = "/signet/";
/// Longest accepted hint, in bytes.
pub const MAX_HINT_LEN: usize = 1024;
/// Most selectors per entry.
pub const MAX_SELECTORS: usize = 64;
/// Longest selector value, in bytes.
pub const MAX_SELECTOR_VALUE_LEN: usize = 1024;
/// Longest selector type, in bytes.
pub const MAX_SELECTOR_TYPE_LEN: usize = 64;
/// Most DNS names per entry.
pub const MAX_DNS_NAMES: usize = 64;
/// Most federated trust domains per entry.
pub const MAX_FEDERATES_WITH: usize = 64;
/// Most audience values of one JWT-SVID.
pub const MAX_AUDIENCES: usize = 32;
/// Longest audience value of a JWT-SVID, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 1024;

/// Why an entry (or a selector, ID or DNS name) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// A SPIFFE ID field does not follow the SPIFFE-ID standard.
    #[error("{field} {value:?} is not a valid SPIFFE ID: {reason}")]
    InvalidId {
        /// `spiffe_id`, `parent_id`, ...
        field: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks.
        reason: signet_spiffe::IdError,
    },
    /// A SPIFFE ID field is in another trust domain.
    #[error("{field} {value:?} is outside trust domain {trust_domain}")]
    OutsideTrustDomain {
        /// `spiffe_id`, `parent_id`, ...
        field: &'static str,
        /// The value given.
        value: String,
        /// The issuer's trust domain.
        trust_domain: String,
    },
    /// A SPIFFE ID field has no path (it names the trust domain itself).
    #[error(
        "{field} {value:?} has no path: a workload or agent ID looks like spiffe://{trust_domain}/..."
    )]
    EmptyPath {
        /// `spiffe_id`, `parent_id`, ...
        field: &'static str,
        /// The value given.
        value: String,
        /// The issuer's trust domain.
        trust_domain: String,
    },
    /// The ID is in the namespace reserved for the issuer and its agents.
    #[error(
        "{field} {value:?} is reserved: paths under /signet/ belong to the issuer and its agents"
    )]
    Reserved {
        /// `spiffe_id`, ...
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// An entry without selectors.
    #[error("at least one selector (TYPE:VALUE) is required")]
    NoSelectors,
    /// A malformed selector.
    #[error("selector {value:?}: {reason}")]
    BadSelector {
        /// The selector as given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A TTL out of bounds.
    #[error("{field} {seconds}s is out of range: expected 0 (the default) or 1s to {max_seconds}s")]
    Ttl {
        /// `x509_svid_ttl` or `jwt_svid_ttl`.
        field: &'static str,
        /// The value given, in seconds.
        seconds: u64,
        /// The upper bound, in seconds.
        max_seconds: u64,
    },
    /// A malformed DNS name.
    #[error("dns_name {value:?}: {reason}")]
    BadDnsName {
        /// The name as given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The hint is too long.
    #[error("hint is {len} bytes long: at most {MAX_HINT_LEN} are allowed")]
    HintTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A bad `federates_with` trust domain.
    #[error("federates_with {value:?}: {reason}")]
    BadFederatesWith {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `expires_at` is not in the future.
    #[error("expires_at {value} is not in the future (now is {now})")]
    ExpiresInPast {
        /// The value given, Unix seconds.
        value: i64,
        /// The current time, Unix seconds.
        now: i64,
    },
    /// A JWT-SVID without audience.
    #[error("at least one audience is required")]
    NoAudience,
    /// An empty audience value.
    #[error("audience {position} of {count} is empty: an audience is a non-empty string")]
    EmptyAudience {
        /// Its position, from 1.
        position: usize,
        /// How many audiences were given.
        count: usize,
    },
    /// An audience value that is too long.
    #[error("audience {position} is {len} bytes long: at most {MAX_AUDIENCE_LEN} are allowed")]
    AudienceTooLong {
        /// Its position, from 1.
        position: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// Too many values in a list field.
    #[error("{field}: {count} values given, at most {max} are allowed")]
    TooMany {
        /// The field.
        field: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// What kind of entry is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An entry created by an operator: selectors required, `/signet/` IDs refused.
    Workload,
    /// An alias entry the issuer creates for an attested agent: selectors optional and the
    /// reserved namespace allowed.
    Alias,
}

/// The bounds that entries are validated against.
#[derive(Debug, Clone)]
pub struct EntryRules {
    /// The issuer's trust domain.
    pub trust_domain: TrustDomain,
    /// Upper bound of `x509_svid_ttl` (the CA TTL).
    pub max_x509_svid_ttl: Duration,
    /// Upper bound of `jwt_svid_ttl`.
    pub max_jwt_svid_ttl: Duration,
}

/// Parses a `type:value` selector (the type is everything before the first `:`).
pub fn parse_selector(s: &str) -> Result<Selector, EntryError> {
    let bad = |reason: &str| EntryError::BadSelector {
        value: s.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((kind, value)) = s.split_once(':') else {
        return Err(bad("a selector is TYPE:VALUE"));
    };
    let sel = Selector::new(kind, value);
    check_selector(&sel).map_err(|e| match e {
        EntryError::BadSelector { reason, .. } => EntryError::BadSelector {
            value: s.to_owned(),
            reason,
        },
        other => other,
    })?;
    Ok(sel)
}

fn check_selector(sel: &Selector) -> Result<(), EntryError> {
    let bad = |reason: String| EntryError::BadSelector {
        value: sel.to_string(),
        reason,
    };
    if sel.kind.is_empty() {
        return Err(bad(
            "the type before ':' is empty (a selector is TYPE:VALUE)".to_owned(),
        ));
    }
    if sel.kind.len() > MAX_SELECTOR_TYPE_LEN {
        return Err(bad(format!(
            "the type is longer than {MAX_SELECTOR_TYPE_LEN} bytes"
        )));
    }
    if let Some(c) = sel
        .kind
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(bad(format!(
            "the type contains {c:?}: only lowercase letters, digits, '_' and '-' are allowed"
        )));
    }
    if sel.value.is_empty() {
        return Err(bad(
            "the value after ':' is empty (a selector is TYPE:VALUE)".to_owned(),
        ));
    }
    if sel.value.len() > MAX_SELECTOR_VALUE_LEN {
        return Err(bad(format!(
            "the value is longer than {MAX_SELECTOR_VALUE_LEN} bytes"
        )));
    }
    if sel.value.chars().any(char::is_control) {
        return Err(bad("the value contains a control character".to_owned()));
    }
    Ok(())
}

/// Parses a SPIFFE ID that must belong to `td` and have a path.
pub fn parse_id_in_domain(
    field: &'static str,
    value: &str,
    td: &TrustDomain,
) -> Result<SpiffeId, EntryError> {
    let id = SpiffeId::parse(value).map_err(|reason| EntryError::InvalidId {
        field,
        value: value.to_owned(),
        reason,
    })?;
    if !id.is_member_of(td) {
        return Err(EntryError::OutsideTrustDomain {
            field,
            value: value.to_owned(),
            trust_domain: td.name().to_owned(),
        });
    }
    if id.path().is_empty() {
        return Err(EntryError::EmptyPath {
            field,
            value: value.to_owned(),
            trust_domain: td.name().to_owned(),
        });
    }
    Ok(id)
}

/// Whether `id` is in the namespace reserved for the issuer and its agents (`/signet/...`).
pub fn is_reserved(id: &SpiffeId) -> bool {
    id.path() == "/signet" || id.path().starts_with(RESERVED_PATH_PREFIX)
}

/// Parses an ID an operator may issue to workloads (mint, alias): in `td`, a path, not reserved.
pub fn parse_workload_id(
    field: &'static str,
    value: &str,
    td: &TrustDomain,
) -> Result<SpiffeId, EntryError> {
    let id = parse_id_in_domain(field, value, td)?;
    if is_reserved(&id) {
        return Err(EntryError::Reserved {
            field,
            value: value.to_owned(),
        });
    }
    Ok(id)
}

/// Validates a DNS name for an X509-SVID: RFC 1123 labels (letters, digits, `-`, 1-63 bytes, no
/// leading or trailing `-`), at most 253 bytes, no trailing `.`, and a `*` only as the whole
/// leftmost label followed by at least one more label (`*.example.org`).
pub fn validate_dns_name(name: &str) -> Result<(), EntryError> {
    let bad = |reason: &str| EntryError::BadDnsName {
        value: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 bytes"));
    }
    if name.ends_with('.') {
        return Err(bad("must not end with '.'"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return Err(bad("has an empty label"));
        }
        if *label == "*" {
            if i != 0 {
                return Err(bad("a wildcard '*' is only allowed as the leftmost label"));
            }
            if labels.len() < 2 {
                return Err(bad(
                    "a wildcard needs a domain after it, e.g. *.example.org",
                ));
            }
            continue;
        }
        if label.len() > 63 {
            return Err(bad("has a label longer than 63 bytes"));
        }
        if label.contains('*') {
            return Err(bad(
                "a wildcard '*' must be a whole label, e.g. *.example.org",
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(bad(&format!(
                "contains {c:?}: only letters, digits, '-' and '.' are allowed"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label must not start or end with '-'"));
        }
    }
    Ok(())
}

fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn check_ttl(field: &'static str, seconds: u32, max: Duration) -> Result<(), EntryError> {
    if seconds != 0 && u64::from(seconds) > max.as_secs() {
        return Err(EntryError::Ttl {
            field,
            seconds: u64::from(seconds),
            max_seconds: max.as_secs(),
        });
    }
    Ok(())
}

fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), EntryError> {
    if count > max {
        return Err(EntryError::TooMany { field, count, max });
    }
    Ok(())
}

/// Checks the audiences of a JWT-SVID: at least one, at most [`MAX_AUDIENCES`], none empty, each
/// at most [`MAX_AUDIENCE_LEN`] bytes.
pub fn validate_audiences(audience: &[String]) -> Result<(), EntryError> {
    if audience.is_empty() {
        return Err(EntryError::NoAudience);
    }
    check_count("audience", audience.len(), MAX_AUDIENCES)?;
    for (i, a) in audience.iter().enumerate() {
        if a.is_empty() {
            return Err(EntryError::EmptyAudience {
                position: i + 1,
                count: audience.len(),
            });
        }
        if a.len() > MAX_AUDIENCE_LEN {
            return Err(EntryError::AudienceTooLong {
                position: i + 1,
                len: a.len(),
            });
        }
    }
    Ok(())
}

/// Validates an entry and returns it normalized (selectors, DNS names and federated trust
/// domains sorted and de-duplicated; IDs in canonical form).
pub fn validate_entry(
    entry: NewEntry,
    kind: EntryKind,
    rules: &EntryRules,
    now: SystemTime,
) -> Result<NewEntry, EntryError> {
    let td = &rules.trust_domain;
    let spiffe_id = parse_id_in_domain("spiffe_id", &entry.spiffe_id, td)?;
    if kind == EntryKind::Workload && is_reserved(&spiffe_id) {
        return Err(EntryError::Reserved {
            field: "spiffe_id",
            value: entry.spiffe_id,
        });
    }
    let parent_id = parse_id_in_domain("parent_id", &entry.parent_id, td)?;

    check_count("selectors", entry.selectors.len(), MAX_SELECTORS)?;
    if entry.selectors.is_empty() && kind == EntryKind::Workload {
        return Err(EntryError::NoSelectors);
    }
    for sel in &entry.selectors {
        check_selector(sel)?;
    }
    let mut selectors = entry.selectors;
    selectors.sort();
    selectors.dedup();

    check_ttl(
        "x509_svid_ttl",
        entry.x509_svid_ttl,
        rules.max_x509_svid_ttl,
    )?;
    check_ttl("jwt_svid_ttl", entry.jwt_svid_ttl, rules.max_jwt_svid_ttl)?;

    check_count("dns_names", entry.dns_names.len(), MAX_DNS_NAMES)?;
    let mut dns_names = Vec::with_capacity(entry.dns_names.len());
    for name in entry.dns_names {
        validate_dns_name(&name)?;
        dns_names.push(name.to_ascii_lowercase());
    }
    dns_names.sort();
    dns_names.dedup();

    if entry.hint.len() > MAX_HINT_LEN {
        return Err(EntryError::HintTooLong {
            len: entry.hint.len(),
        });
    }

    check_count(
        "federates_with",
        entry.federates_with.len(),
        MAX_FEDERATES_WITH,
    )?;
    let mut federates_with = Vec::with_capacity(entry.federates_with.len());
    for value in entry.federates_with {
        let fed = TrustDomain::new(&value).map_err(|e| EntryError::BadFederatesWith {
            value: value.clone(),
            reason: e.to_string(),
        })?;
        if &fed == td {
            return Err(EntryError::BadFederatesWith {
                value,
                reason: format!("{td} is the issuer's own trust domain"),
            });
        }
        federates_with.push(fed.name().to_owned());
    }
    federates_with.sort();
    federates_with.dedup();

    if let Some(t) = entry.expires_at {
        let now = unix_now(now);
        if t <= now {
            return Err(EntryError::ExpiresInPast { value: t, now });
        }
    }

    Ok(NewEntry {
        spiffe_id: spiffe_id.to_string(),
        parent_id: parent_id.to_string(),
        selectors,
        x509_svid_ttl: entry.x509_svid_ttl,
        jwt_svid_ttl: entry.jwt_svid_ttl,
        dns_names,
        hint: entry.hint,
        admin: entry.admin,
        downstream: entry.downstream,
        federates_with,
        expires_at: entry.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> EntryRules {
        EntryRules {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            max_x509_svid_ttl: Duration::from_secs(86400),
            max_jwt_svid_ttl: Duration::from_secs(86400),
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn entry() -> NewEntry {
        NewEntry {
            spiffe_id: "spiffe://example.org/web".into(),
            parent_id: "spiffe://example.org/signet/agent/join_token/abc".into(),
            selectors: vec![Selector::new("unix", "uid:1000")],
            ..NewEntry::default()
        }
    }

    fn check(e: NewEntry) -> Result<NewEntry, String> {
        validate_entry(e, EntryKind::Workload, &rules(), now()).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_entry_is_normalized() {
        let mut e = entry();
        e.selectors = vec![
            Selector::new("unix", "uid:1000"),
            Selector::new("docker", "label:a=b"),
            Selector::new("unix", "uid:1000"),
        ];
        e.dns_names = vec![
            "b.example.org".into(),
            "A.example.org".into(),
            "b.example.org".into(),
        ];
        e.federates_with = vec![
            "spiffe://partner.org".into(),
            "other.org".into(),
            "partner.org".into(),
        ];
        e.x509_svid_ttl = 3600;
        e.jwt_svid_ttl = 300;
        e.hint = "x".repeat(MAX_HINT_LEN);
        e.expires_at = Some(1_800_000_001);
        let v = check(e).unwrap();
        assert_eq!(
            v.selectors,
            vec![
                Selector::new("docker", "label:a=b"),
                Selector::new("unix", "uid:1000")
            ]
        );
        assert_eq!(v.dns_names, vec!["a.example.org", "b.example.org"]);
        assert_eq!(v.federates_with, vec!["other.org", "partner.org"]);
    }

    #[test]
    fn malformed_spiffe_ids_are_refused() {
        for (bad, reason) in [
            ("", "empty"),
            ("http://example.org/web", "scheme"),
            ("SPIFFE://example.org/web", "scheme"),
            ("spiffe://", "no trust domain"),
            ("spiffe:///web", "no trust domain"),
            ("spiffe://Example.org/web", "trust domain contains 'E'"),
            ("spiffe://example.org:443/web", "port"),
            ("spiffe://user@example.org/web", "userinfo"),
            ("spiffe://example.org/web?x=1", "query"),
            ("spiffe://example.org/web#f", "fragment"),
            ("spiffe://example.org/w%20b", "percent"),
            ("spiffe://example.org/a//b", "empty segment"),
            ("spiffe://example.org/a/./b", "'.' or '..'"),
            ("spiffe://example.org/a/../b", "'.' or '..'"),
            ("spiffe://example.org/web/", "end with '/'"),
            ("spiffe://example.org/w b", "' '"),
        ] {
            let mut e = entry();
            e.spiffe_id = bad.into();
            let msg = check(e).unwrap_err();
            assert!(
                msg.starts_with(&format!("spiffe_id {bad:?} is not a valid SPIFFE ID")),
                "{bad}: {msg}"
            );
            assert!(msg.contains(reason), "{bad}: {msg}");

            let mut e = entry();
            e.parent_id = bad.into();
            let msg = check(e).unwrap_err();
            assert!(
                msg.starts_with(&format!("parent_id {bad:?} is not a valid SPIFFE ID")),
                "{msg}"
            );
        }
        let mut e = entry();
        e.spiffe_id = format!("spiffe://example.org/{}", "a".repeat(2100));
        assert!(check(e).unwrap_err().contains("longer than 2048"));
    }

    #[test]
    fn ids_outside_the_trust_domain_are_refused() {
        let mut e = entry();
        e.spiffe_id = "spiffe://other.org/x".into();
        assert_eq!(
            check(e).unwrap_err(),
            "spiffe_id \"spiffe://other.org/x\" is outside trust domain example.org"
        );
        let mut e = entry();
        e.parent_id = "spiffe://other.org/agent".into();
        assert_eq!(
            check(e).unwrap_err(),
            "parent_id \"spiffe://other.org/agent\" is outside trust domain example.org"
        );
    }

    #[test]
    fn trust_domain_ids_are_refused() {
        let mut e = entry();
        e.spiffe_id = "spiffe://example.org".into();
        assert!(
            check(e)
                .unwrap_err()
                .starts_with("spiffe_id \"spiffe://example.org\" has no path")
        );
        let mut e = entry();
        e.parent_id = "spiffe://example.org".into();
        assert!(
            check(e)
                .unwrap_err()
                .starts_with("parent_id \"spiffe://example.org\" has no path")
        );
    }

    #[test]
    fn reserved_namespace_is_refused_except_for_aliases() {
        for id in [
            "spiffe://example.org/signet/issuer",
            "spiffe://example.org/signet/agent/join_token/x",
            "spiffe://example.org/signet",
        ] {
            let mut e = entry();
            e.spiffe_id = id.into();
            assert!(
                check(e.clone()).unwrap_err().contains("is reserved"),
                "{id}"
            );
            assert!(validate_entry(e, EntryKind::Alias, &rules(), now()).is_ok());
        }
        let mut e = entry();
        e.spiffe_id = "spiffe://example.org/signetx/web".into();
        assert!(check(e).is_ok());
    }

    #[test]
    fn selectors_are_required_except_for_aliases() {
        let mut e = entry();
        e.selectors.clear();
        assert_eq!(
            check(e.clone()).unwrap_err(),
            "at least one selector (TYPE:VALUE) is required"
        );
        assert!(validate_entry(e, EntryKind::Alias, &rules(), now()).is_ok());
    }

    #[test]
    fn bad_selectors_are_refused() {
        assert_eq!(
            parse_selector("nocolon").unwrap_err().to_string(),
            "selector \"nocolon\": a selector is TYPE:VALUE"
        );
        assert!(
            parse_selector(":uid:1000")
                .unwrap_err()
                .to_string()
                .contains("type before ':' is empty")
        );
        assert!(
            parse_selector("unix:")
                .unwrap_err()
                .to_string()
                .contains("value after ':' is empty")
        );
        assert!(
            parse_selector("Unix:uid:1")
                .unwrap_err()
                .to_string()
                .contains("type contains 'U'")
        );
        assert!(
            parse_selector("un ix:uid:1")
                .unwrap_err()
                .to_string()
                .contains("type contains ' '")
        );
        assert!(
            parse_selector("unix:a\nb")
                .unwrap_err()
                .to_string()
                .contains("control character")
        );
        assert!(parse_selector(&format!("unix:{}", "v".repeat(1025))).is_err());
        assert!(parse_selector(&format!("{}:v", "t".repeat(65))).is_err());
        let s = parse_selector("unix:uid:1000").unwrap();
        assert_eq!((s.kind.as_str(), s.value.as_str()), ("unix", "uid:1000"));
        assert!(parse_selector("k8s_psat-2:ns:default").is_ok());

        let mut e = entry();
        e.selectors.push(Selector::new("", "x"));
        assert!(
            check(e)
                .unwrap_err()
                .starts_with("selector \":x\": the type before ':' is empty")
        );
        let mut e = entry();
        e.selectors = (0..65)
            .map(|i| Selector::new("t", format!("{i}")))
            .collect();
        assert_eq!(
            check(e).unwrap_err(),
            "selectors: 65 values given, at most 64 are allowed"
        );
    }

    #[test]
    fn ttls_are_bounded() {
        let mut e = entry();
        e.x509_svid_ttl = 86401;
        assert_eq!(
            check(e).unwrap_err(),
            "x509_svid_ttl 86401s is out of range: expected 0 (the default) or 1s to 86400s"
        );
        let mut e = entry();
        e.jwt_svid_ttl = 86401;
        assert!(
            check(e)
                .unwrap_err()
                .starts_with("jwt_svid_ttl 86401s is out of range")
        );
        let mut e = entry();
        e.x509_svid_ttl = 86400;
        e.jwt_svid_ttl = 1;
        assert!(check(e).is_ok());
    }

    #[test]
    fn dns_names_follow_rfc_1123() {
        for good in [
            "example.org",
            "a-b.example.org",
            "*.example.org",
            "*.local",
            "localhost",
            "x1",
        ] {
            assert!(validate_dns_name(good).is_ok(), "{good}");
        }
        for (bad, reason) in [
            ("", "empty"),
            ("a..b", "empty label"),
            ("example.org.", "end with '.'"),
            ("-a.example.org", "start or end with '-'"),
            ("a-.example.org", "start or end with '-'"),
            ("a_b.example.org", "contains '_'"),
            ("a.*.example.org", "only allowed as the leftmost label"),
            ("*a.example.org", "whole label"),
            ("*", "needs a domain"),
            ("a b", "contains ' '"),
        ] {
            let msg = validate_dns_name(bad).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("dns_name {bad:?}: ")), "{msg}");
            assert!(msg.contains(reason), "{bad}: {msg}");
        }
        assert!(
            validate_dns_name(&format!("{}.org", "a".repeat(64)))
                .unwrap_err()
                .to_string()
                .contains("63")
        );
        assert!(
            validate_dns_name(&["abc"; 70].join("."))
                .unwrap_err()
                .to_string()
                .contains("253")
        );
        let mut e = entry();
        e.dns_names = vec!["bad_name".into()];
        assert!(check(e).unwrap_err().starts_with("dns_name \"bad_name\""));
    }

    #[test]
    fn hint_is_bounded() {
        let mut e = entry();
        e.hint = "x".repeat(MAX_HINT_LEN + 1);
        assert_eq!(
            check(e).unwrap_err(),
            "hint is 1025 bytes long: at most 1024 are allowed"
        );
    }

    #[test]
    fn federates_with_must_be_other_valid_trust_domains() {
        let mut e = entry();
        e.federates_with = vec!["example.org".into()];
        assert_eq!(
            check(e).unwrap_err(),
            "federates_with \"example.org\": example.org is the issuer's own trust domain"
        );
        let mut e = entry();
        e.federates_with = vec!["Bad.Org".into()];
        assert!(
            check(e)
                .unwrap_err()
                .starts_with("federates_with \"Bad.Org\": trust domain contains")
        );
        let mut e = entry();
        e.federates_with = vec!["spiffe://partner.org/path".into()];
        assert!(check(e).is_err());
    }

    #[test]
    fn expires_at_must_be_in_the_future() {
        let mut e = entry();
        e.expires_at = Some(1_800_000_000);
        assert_eq!(
            check(e).unwrap_err(),
            "expires_at 1800000000 is not in the future (now is 1800000000)"
        );
    }

    #[test]
    fn workload_ids_for_mint_and_aliases() {
        let td = TrustDomain::new("example.org").unwrap();
        assert!(parse_workload_id("spiffe_id", "spiffe://example.org/node/a", &td).is_ok());
        assert!(
            parse_workload_id("spiffe_id", "spiffe://example.org/signet/issuer", &td)
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
    }

    #[test]
    fn jwt_audiences_are_bounded() {
        let auds = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(validate_audiences(&auds(&["svc"])).is_ok());
        assert!(validate_audiences(&auds(&["a", "b"])).is_ok());
        let err = |v: Vec<String>| validate_audiences(&v).unwrap_err().to_string();
        assert_eq!(err(vec![]), "at least one audience is required");
        assert_eq!(
            err(auds(&["a", ""])),
            "audience 2 of 2 is empty: an audience is a non-empty string"
        );
        assert_eq!(
            err(vec!["x".repeat(MAX_AUDIENCE_LEN + 1)]),
            "audience 1 is 1025 bytes long: at most 1024 are allowed"
        );
        assert!(validate_audiences(&["x".repeat(MAX_AUDIENCE_LEN)]).is_ok());
        assert_eq!(
            err(vec!["a".to_owned(); MAX_AUDIENCES + 1]),
            "audience: 33 values given, at most 32 are allowed"
        );
        assert!(validate_audiences(&vec!["a".to_owned(); MAX_AUDIENCES]).is_ok());
    }
}
