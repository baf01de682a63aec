//! JWT-SVIDs on the Workload API: the per-identity, per-audience-set token cache, and the
//! conversions `ValidateJWTSVID` needs.
//!
//! X509-SVIDs are pushed into the [`Cache`](crate::cache::Cache) ahead of time; JWT-SVIDs depend
//! on the audience a workload asks for, so they are minted on demand by the issuer
//! ([`SvidIssuer`]) and kept in a [`TokenCache`] keyed by entry ID and the sorted, de-duplicated
//! audience set (renewed at half-life, single flight, bounded: see [`super::tokens`]).

use std::sync::Arc;
use std::time::Duration;

use prost_types::value::Kind;
use serde_json::Value;

use super::tokens::TokenCache;
use super::{IssuerFailure, MintedToken, SvidIssuer};
use crate::cache::CachedSvid;

/// Most tokens kept at once (a JWT-SVID is a few hundred bytes: a few MB at most).
pub const MAX_CACHED_TOKENS: usize = 16_384;

/// Clock skew tolerated by `ValidateJWTSVID` on `exp`, `nbf` and `iat`.
pub const VALIDATION_LEEWAY: Duration = Duration::from_secs(30);

/// The longest audience value accepted (the issuer's limit).
pub const MAX_AUDIENCE_LEN: usize = 1024;

/// The most audience values in one request (the issuer's limit).
pub const MAX_AUDIENCES: usize = 32;

/// The JWT-SVID cache: entry ID and normalized audience set -> token.
pub type JwtSvidCache = TokenCache<(String, Box<[String]>), MintedToken>;

/// An empty JWT-SVID cache of [`MAX_CACHED_TOKENS`].
pub fn new_cache() -> JwtSvidCache {
    TokenCache::new("JWT-SVID", MAX_CACHED_TOKENS)
}

/// The JWT-SVID of `svid`'s entry for `audience` (normalized by [`normalize_audience`]), from
/// `cache` or minted by `issuer`.
pub async fn jwt_svid_for(
    cache: &JwtSvidCache,
    issuer: &dyn SvidIssuer,
    svid: &CachedSvid,
    audience: &[String],
) -> Result<Arc<MintedToken>, IssuerFailure> {
    let entry_id = svid.entry_id.to_string();
    let key = (entry_id.clone(), Box::<[String]>::from(audience));
    cache
        .get(key, &svid.spiffe_id, || {
            issuer.mint_jwt_svid(&entry_id, audience)
        })
        .await
}

/// Sorts and de-duplicates the requested audiences, or says why the request is invalid.
pub fn normalize_audience(audience: &[String]) -> Result<Box<[String]>, String> {
    if audience.is_empty() {
        return Err("audience must be specified".into());
    }
    if audience.iter().any(String::is_empty) {
        return Err("an audience value is empty".into());
    }
    if audience.iter().any(|a| a.len() > MAX_AUDIENCE_LEN) {
        return Err(format!(
            "an audience value is longer than {MAX_AUDIENCE_LEN} bytes"
        ));
    }
    let mut v = audience.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.len() > MAX_AUDIENCES {
        return Err(format!(
            "{} audience values; at most {MAX_AUDIENCES}",
            v.len()
        ));
    }
    Ok(v.into_boxed_slice())
}

/// A JSON value as a `google.protobuf.Value` (numbers become doubles, as the protobuf JSON
/// mapping does).
pub fn json_to_proto(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_object_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn json_object_to_struct(map: &serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_proto(v)))
            .collect(),
    }
}

/// A `google.protobuf.Value` as JSON (the inverse of [`json_to_proto`]; a number that is a whole
/// number of at most 2^53 becomes an integer again).
pub fn proto_to_json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if n.fract() == 0.0 && n.abs() <= EXACT {
                // Exact: a whole f64 within 2^53 converts without loss.
                #[allow(clippy::cast_possible_truncation)]
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(proto_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json_object(s)),
    }
}

/// A `google.protobuf.Struct` as a JSON object.
pub fn struct_to_json_object(s: &prost_types::Struct) -> serde_json::Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), proto_to_json(v)))
        .collect()
}

/// Test helpers.
#[cfg(test)]
pub(crate) mod testing {
    use async_trait::async_trait;

    use super::super::{IssuerFailure, MintedToken, SvidIssuer};

    /// An issuer that is never reachable.
    pub(crate) struct NoIssuer;

    #[async_trait]
    impl SvidIssuer for NoIssuer {
        async fn mint_jwt_svid(
            &self,
            _entry_id: &str,
            _audience: &[String],
        ) -> Result<MintedToken, IssuerFailure> {
            Err(IssuerFailure::Unavailable("no issuer in this test".into()))
        }

        async fn mint_wit_svid(
            &self,
            _entry_id: &str,
            _public_key_spki: &[u8],
        ) -> Result<MintedToken, IssuerFailure> {
            Err(IssuerFailure::Unavailable("no issuer in this test".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aud(a: &[&str]) -> Box<[String]> {
        normalize_audience(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn audiences_are_sorted_deduplicated_and_checked() {
        assert_eq!(&*aud(&["b", "a", "b"]), ["a", "b"]);
        let norm =
            |a: &[&str]| normalize_audience(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(norm(&[]).unwrap_err(), "audience must be specified");
        assert!(norm(&["a", ""]).unwrap_err().contains("empty"));
        assert!(norm(&[&"x".repeat(1025)]).unwrap_err().contains("1024"));
        let many: Vec<String> = (0..33).map(|i| i.to_string()).collect();
        assert!(
            normalize_audience(&many)
                .unwrap_err()
                .contains("at most 32")
        );
    }

    #[test]
    fn claims_convert_to_a_protobuf_struct() {
        let claims = serde_json::json!({
            "sub": "spiffe://example.org/a",
            "aud": ["x", "y"],
            "exp": 1_900_000_000,
            "nested": {"ok": true, "none": null},
        });
        let s = json_object_to_struct(claims.as_object().unwrap());
        let get = |k: &str| s.fields[k].kind.clone().unwrap();
        assert_eq!(
            get("sub"),
            Kind::StringValue("spiffe://example.org/a".into())
        );
        assert_eq!(get("exp"), Kind::NumberValue(1_900_000_000.0));
        let Kind::ListValue(l) = get("aud") else {
            panic!("aud is not a list")
        };
        assert_eq!(l.values.len(), 2);
        let Kind::StructValue(n) = get("nested") else {
            panic!("nested is not a struct")
        };
        assert_eq!(n.fields["ok"].kind, Some(Kind::BoolValue(true)));
        assert_eq!(n.fields["none"].kind, Some(Kind::NullValue(0)));
        // And back, integers included.
        assert_eq!(Value::Object(struct_to_json_object(&s)), claims);
        let half = json_to_proto(&serde_json::json!(1.5));
        assert_eq!(proto_to_json(&half), serde_json::json!(1.5));
    }
}
