//! SPIFFE IDs and trust domains, parsed with every rule of the SPIFFE-ID standard.
//!
//! `spiffe://<trust-domain>/<path>`: the scheme and trust domain are lowercase, the trust domain uses
//! `[a-z0-9.-_]`, path segments use `[a-zA-Z0-9.-_]`, no segment is empty, `.` or `..`, there is no
//! trailing `/`, no percent-encoding, port, userinfo, query or fragment, the trust domain is at most
//! 255 bytes and the whole ID is at most 2048 bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme of every SPIFFE ID.
pub const SCHEME_PREFIX: &str = "spiffe://";

/// The longest SPIFFE ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 2048;

/// The longest trust domain name accepted, in bytes (the RFC 3986 limit on a URI host, which the
/// SPIFFE-ID standard adopts in section 2.3).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a SPIFFE ID or trust domain was rejected. Each variant names one rule of the standard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input is empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The scheme is missing or is not exactly `spiffe` in lowercase.
    #[error("SPIFFE ID must start with the lowercase scheme `spiffe://`")]
    WrongScheme,
    /// `spiffe://` is followed by nothing or by `/`.
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    /// The trust domain contains a character outside `[a-z0-9.-_]` (uppercase included).
    #[error(
        "trust domain contains {0:?}: only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    BadTrustDomainChar(char),
    /// A `:` was found in the authority: a port is not allowed.
    #[error("SPIFFE ID must not contain a port")]
    Port,
    /// An `@` was found in the authority: userinfo is not allowed.
    #[error("SPIFFE ID must not contain userinfo")]
    UserInfo,
    /// A `?` query was found.
    #[error("SPIFFE ID must not contain a query")]
    Query,
    /// A `#` fragment was found.
    #[error("SPIFFE ID must not contain a fragment")]
    Fragment,
    /// A `%` was found: percent-encoding is not allowed.
    #[error("SPIFFE ID must not contain percent-encoded characters")]
    PercentEncoded,
    /// A path segment contains a character outside `[a-zA-Z0-9.-_]`.
    #[error("path segment contains {0:?}: only letters, digits, '.', '-' and '_' are allowed")]
    BadPathChar(char),
    /// The path has an empty segment (`//`).
    #[error("path contains an empty segment")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    /// The path ends with `/`.
    #[error("path must not end with '/'")]
    TrailingSlash,
    /// The path does not start with `/`.
    #[error("path must start with '/'")]
    PathNotAbsolute,
    /// The ID is longer than [`MAX_ID_LEN`] bytes.
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// The trust domain name is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
}

/// A validated trust domain name such as `example.org` (without the scheme).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain {
    name: String,
}

impl TrustDomain {
    /// Parses a trust domain given either as a bare name (`example.org`) or as a trust-domain ID
    /// (`spiffe://example.org`).
    pub fn new(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        // Like go-spiffe, `:/` (not only `://`) means "this is meant as an ID", so that a typo such
        // as `spiffe:/example.org` is reported as a bad scheme rather than as a port.
        if input.contains(":/") {
            let id = SpiffeId::parse(input)?;
            if !id.path().is_empty() {
                return Err(IdError::BadTrustDomainChar('/'));
            }
            return Ok(id.trust_domain);
        }
        validate_trust_domain(input)?;
        Ok(Self {
            name: input.to_owned(),
        })
    }

    /// The bare name, e.g. `example.org`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The trust-domain ID, e.g. `spiffe://example.org` (the key used in Workload API maps).
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.name)
    }

    /// Builds the SPIFFE ID with this trust domain and `path` (which must start with `/`, or be empty).
    pub fn spiffe_id(&self, path: &str) -> Result<SpiffeId, IdError> {
        validate_path(path)?;
        let id = SpiffeId {
            trust_domain: self.clone(),
            path: path.to_owned(),
        };
        if id.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        Ok(id)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A validated SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: String,
}

impl SpiffeId {
    /// Parses a SPIFFE ID, enforcing every rule of the standard.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        if input.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        let rest = input
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(IdError::WrongScheme)?;
        // Rules that apply to the whole remainder, checked first so the error names the real cause.
        if rest.contains('#') {
            return Err(IdError::Fragment);
        }
        if rest.contains('?') {
            return Err(IdError::Query);
        }
        if rest.contains('%') {
            return Err(IdError::PercentEncoded);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(IdError::MissingTrustDomain);
        }
        // `@` anywhere in the authority means userinfo (even `user:password@host`, whose `:` is not
        // a port). Otherwise the first character outside the trust-domain set names the rule: `:`
        // is a port, anything else a bad character (so `[::1]` reports '[' rather than a port).
        if authority.contains('@') {
            return Err(IdError::UserInfo);
        }
        validate_trust_domain(authority)?;
        validate_path(path)?;
        Ok(Self {
            trust_domain: TrustDomain {
                name: authority.to_owned(),
            },
            path: path.to_owned(),
        })
    }

    /// The trust domain of this ID.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, starting with `/`, or empty for a trust-domain ID.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        &self.trust_domain == td
    }

    fn len(&self) -> usize {
        SCHEME_PREFIX.len() + self.trust_domain.name.len() + self.path.len()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.trust_domain.name, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong);
    }
    for c in name.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' => return Err(IdError::Port),
            '@' => return Err(IdError::UserInfo),
            '%' => return Err(IdError::PercentEncoded),
            '?' => return Err(IdError::Query),
            '#' => return Err(IdError::Fragment),
            other => return Err(IdError::BadTrustDomainChar(other)),
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(body) = path.strip_prefix('/') else {
        return Err(IdError::PathNotAbsolute);
    };
    if body.is_empty() {
        return Err(IdError::TrailingSlash);
    }
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(if i == last {
                IdError::TrailingSlash
            } else {
                IdError::EmptySegment
            });
        }
        if *seg == "." || *seg == ".." {
            return Err(IdError::DotSegment);
        }
        for c in seg.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '%' => return Err(IdError::PercentEncoded),
                '?' => return Err(IdError::Query),
                '#' => return Err(IdError::Fragment),
                other => return Err(IdError::BadPathChar(other)),
            }
        }
    }
    Ok(())
}
