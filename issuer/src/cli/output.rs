//! How the admin commands print records: aligned text for people, JSON for scripts.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use signet_proto::admin as pb;

/// A selector in JSON output.
#[derive(Debug, Serialize)]
pub struct SelectorJson {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

fn selectors(s: &[pb::Selector]) -> Vec<SelectorJson> {
    s.iter()
        .map(|s| SelectorJson {
            kind: s.r#type.clone(),
            value: s.value.clone(),
        })
        .collect()
}

/// An entry in JSON output.
#[derive(Debug, Serialize)]
pub struct EntryJson {
    id: String,
    spiffe_id: String,
    parent_id: String,
    selectors: Vec<SelectorJson>,
    x509_svid_ttl: u32,
    jwt_svid_ttl: u32,
    dns_names: Vec<String>,
    hint: String,
    admin: bool,
    downstream: bool,
    federates_with: Vec<String>,
    expires_at: Option<i64>,
    revision: i64,
    created_at: i64,
}

impl From<&pb::Entry> for EntryJson {
    fn from(e: &pb::Entry) -> Self {
        Self {
            id: e.id.clone(),
            spiffe_id: e.spiffe_id.clone(),
            parent_id: e.parent_id.clone(),
            selectors: selectors(&e.selectors),
            x509_svid_ttl: e.x509_svid_ttl,
            jwt_svid_ttl: e.jwt_svid_ttl,
            dns_names: e.dns_names.clone(),
            hint: e.hint.clone(),
            admin: e.admin,
            downstream: e.downstream,
            federates_with: e.federates_with.clone(),
            expires_at: e.expires_at,
            revision: e.revision,
            created_at: e.created_at,
        }
    }
}

/// An agent in JSON output.
#[derive(Debug, Serialize)]
pub struct AgentJson {
    spiffe_id: String,
    attestation_type: String,
    serial: String,
    expires_at: i64,
    selectors: Vec<SelectorJson>,
    banned: bool,
    can_reattest: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<&pb::Agent> for AgentJson {
    fn from(a: &pb::Agent) -> Self {
        Self {
            spiffe_id: a.spiffe_id.clone(),
            attestation_type: a.attestation_type.clone(),
            serial: a.serial.clone(),
            expires_at: a.expires_at,
            selectors: selectors(&a.selectors),
            banned: a.banned,
            can_reattest: a.can_reattest,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// A bundle summary in JSON output.
#[derive(Debug, Serialize)]
pub struct BundleJson {
    trust_domain: String,
    own: bool,
    sequence: u64,
    x509_authorities: u32,
    jwt_authorities: u32,
    wit_authorities: u32,
    updated_at: i64,
}

impl From<&pb::BundleInfo> for BundleJson {
    fn from(b: &pb::BundleInfo) -> Self {
        Self {
            trust_domain: b.trust_domain.clone(),
            own: b.own,
            sequence: b.sequence,
            x509_authorities: b.x509_authorities,
            jwt_authorities: b.jwt_authorities,
            wit_authorities: b.wit_authorities,
            updated_at: b.updated_at,
        }
    }
}

/// A federation relationship in JSON output.
#[derive(Debug, Serialize)]
pub struct FederationJson {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    endpoint_spiffe_id: String,
    has_ca_bundle: bool,
    source: String,
    created_at: i64,
    updated_at: i64,
    bundle_sequence: Option<u64>,
    bundle_updated_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_success_at: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    next_poll_at: Option<i64>,
    consecutive_failures: u32,
}

impl From<&pb::FederationRelationship> for FederationJson {
    fn from(r: &pb::FederationRelationship) -> Self {
        Self {
            trust_domain: r.trust_domain.clone(),
            bundle_endpoint_url: r.bundle_endpoint_url.clone(),
            profile: r.profile.clone(),
            endpoint_spiffe_id: r.endpoint_spiffe_id.clone(),
            has_ca_bundle: r.has_ca_bundle,
            source: r.source.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            bundle_sequence: r.bundle_sequence,
            bundle_updated_at: r.bundle_updated_at,
            last_attempt_at: r.last_attempt_at,
            last_success_at: r.last_success_at,
            last_error: (!r.last_error.is_empty()).then(|| r.last_error.clone()),
            last_error_at: r.last_error_at,
            next_poll_at: r.next_poll_at,
            consecutive_failures: r.consecutive_failures,
        }
    }
}

/// A CA slot in JSON output.
#[derive(Debug, Serialize)]
pub struct SlotJson {
    id: String,
    state: String,
    not_before: i64,
    not_after: i64,
    subject: String,
    key_type: String,
    fingerprint_sha256: String,
}

/// The CA in JSON output.
#[derive(Debug, Serialize)]
pub struct CaJson {
    slots: Vec<SlotJson>,
    bundle_sequence: u64,
}

impl From<&pb::CaStatus> for CaJson {
    fn from(c: &pb::CaStatus) -> Self {
        Self {
            slots: c
                .slots
                .iter()
                .map(|s| SlotJson {
                    id: s.id.clone(),
                    state: s.state.clone(),
                    not_before: s.not_before,
                    not_after: s.not_after,
                    subject: s.subject.clone(),
                    key_type: s.key_type.clone(),
                    fingerprint_sha256: s.fingerprint_sha256.clone(),
                })
                .collect(),
            bundle_sequence: c.bundle_sequence,
        }
    }
}

/// A Unix time as RFC 3339 (UTC).
pub fn time(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string(),
        Err(_) => secs.to_string(),
    }
}

fn ttl(secs: u32) -> String {
    if secs == 0 {
        "default".to_owned()
    } else {
        humantime::format_duration(Duration::from_secs(u64::from(secs))).to_string()
    }
}

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:<17}: {value}");
}

fn selector_lines(out: &mut String, selectors: &[pb::Selector]) {
    for s in selectors {
        line(out, "Selector", format!("{}:{}", s.r#type, s.value));
    }
}

/// An entry as text.
pub fn entry_text(e: &pb::Entry) -> String {
    let mut out = String::new();
    line(&mut out, "Entry ID", &e.id);
    line(&mut out, "SPIFFE ID", &e.spiffe_id);
    line(&mut out, "Parent ID", &e.parent_id);
    line(&mut out, "Revision", e.revision);
    line(&mut out, "X509-SVID TTL", ttl(e.x509_svid_ttl));
    line(&mut out, "JWT-SVID TTL", ttl(e.jwt_svid_ttl));
    selector_lines(&mut out, &e.selectors);
    for d in &e.dns_names {
        line(&mut out, "DNS name", d);
    }
    for f in &e.federates_with {
        line(&mut out, "FederatesWith", f);
    }
    if e.admin {
        line(&mut out, "Admin", true);
    }
    if e.downstream {
        line(&mut out, "Downstream", true);
    }
    if !e.hint.is_empty() {
        line(&mut out, "Hint", &e.hint);
    }
    if let Some(t) = e.expires_at {
        line(&mut out, "Expires at", time(t));
    }
    line(&mut out, "Created at", time(e.created_at));
    out
}

/// `Found N <things>` (`one` for a single one), then each record as `text` makes it, after a blank
/// line.
fn found<R>(records: &[R], one: &str, many: &str, text: fn(&R) -> String) -> String {
    let mut out = match records.len() {
        1 => format!("Found 1 {one}\n"),
        n => format!("Found {n} {many}\n"),
    };
    for r in records {
        out.push('\n');
        out.push_str(&text(r));
    }
    out
}

/// A list of entries as text.
pub fn entries_text(entries: &[pb::Entry]) -> String {
    found(entries, "entry", "entries", entry_text)
}

/// An agent as text.
pub fn agent_text(a: &pb::Agent) -> String {
    let mut out = String::new();
    line(&mut out, "SPIFFE ID", &a.spiffe_id);
    line(&mut out, "Attestation type", &a.attestation_type);
    line(&mut out, "Serial number", &a.serial);
    line(&mut out, "Expires at", time(a.expires_at));
    line(&mut out, "Banned", a.banned);
    line(&mut out, "Can re-attest", a.can_reattest);
    selector_lines(&mut out, &a.selectors);
    line(&mut out, "Attested at", time(a.created_at));
    line(&mut out, "Updated at", time(a.updated_at));
    out
}

/// A list of agents as text.
pub fn agents_text(agents: &[pb::Agent]) -> String {
    found(agents, "attested agent", "attested agents", agent_text)
}

/// Bundles as text.
pub fn bundles_text(bundles: &[pb::BundleInfo]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<9} {:>8} {:>5} {:>5} {:>5}  UPDATED",
        "TRUST DOMAIN", "KIND", "SEQUENCE", "X509", "JWT", "WIT"
    );
    for b in bundles {
        let _ = writeln!(
            out,
            "{:<32} {:<9} {:>8} {:>5} {:>5} {:>5}  {}",
            b.trust_domain,
            if b.own { "own" } else { "federated" },
            b.sequence,
            b.x509_authorities,
            b.jwt_authorities,
            b.wit_authorities,
            time(b.updated_at)
        );
    }
    out
}

fn opt_time(t: Option<i64>) -> String {
    t.map_or_else(|| "never".to_owned(), time)
}

/// A federation relationship as text.
pub fn relationship_text(r: &pb::FederationRelationship) -> String {
    let mut out = String::new();
    line(&mut out, "Trust domain", &r.trust_domain);
    line(&mut out, "Endpoint URL", &r.bundle_endpoint_url);
    line(&mut out, "Profile", &r.profile);
    if !r.endpoint_spiffe_id.is_empty() {
        line(&mut out, "Endpoint ID", &r.endpoint_spiffe_id);
    }
    if r.profile == "https_web" {
        line(
            &mut out,
            "Endpoint roots",
            if r.has_ca_bundle {
                "configured CA bundle"
            } else {
                "system roots"
            },
        );
    }
    line(&mut out, "Defined in", &r.source);
    match r.bundle_sequence {
        Some(seq) => line(&mut out, "Bundle sequence", seq),
        None => line(&mut out, "Bundle sequence", "no bundle stored"),
    }
    if let Some(t) = r.bundle_updated_at {
        line(&mut out, "Bundle updated", time(t));
    }
    line(&mut out, "Last attempt", opt_time(r.last_attempt_at));
    line(&mut out, "Last success", opt_time(r.last_success_at));
    if !r.last_error.is_empty() {
        line(&mut out, "Last error", &r.last_error);
        line(&mut out, "Last error at", opt_time(r.last_error_at));
        line(&mut out, "Failures in a row", r.consecutive_failures);
    }
    if let Some(t) = r.next_poll_at {
        line(&mut out, "Next poll", time(t));
    }
    out
}

/// A list of relationships as text.
pub fn relationships_text(list: &[pb::FederationRelationship]) -> String {
    found(
        list,
        "federation relationship",
        "federation relationships",
        relationship_text,
    )
}

/// The CA as text.
pub fn ca_text(c: &pb::CaStatus) -> String {
    let mut out = String::new();
    line(&mut out, "Bundle sequence", c.bundle_sequence);
    for s in &c.slots {
        out.push('\n');
        line(&mut out, "Slot", &s.id);
        line(&mut out, "State", &s.state);
        line(&mut out, "Subject", &s.subject);
        line(&mut out, "Key type", &s.key_type);
        line(&mut out, "Not before", time(s.not_before));
        line(&mut out, "Not after", time(s.not_after));
        line(&mut out, "SHA-256", &s.fingerprint_sha256);
    }
    out
}

/// Serializes `value` as pretty JSON with a trailing newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// A Unix time in milliseconds as RFC 3339 (UTC, milliseconds).
pub fn time_ms(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(m) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(m)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A position of the audit log in JSON output.
#[derive(Debug, Serialize)]
pub struct PositionJson {
    seq: i64,
    hash: String,
}

/// A chain break in JSON output.
#[derive(Debug, Serialize)]
pub struct ChainBreakJson {
    seq: i64,
    kind: String,
    message: String,
}

/// An anchor comparison in JSON output.
#[derive(Debug, Serialize)]
pub struct AnchorJson {
    source: String,
    seq: i64,
    hash: Option<String>,
    status: String,
    message: String,
}

/// `audit verify` in JSON output.
#[derive(Debug, Serialize)]
pub struct VerifyJson {
    ok: bool,
    events: u64,
    head: Option<PositionJson>,
    chain_break: Option<ChainBreakJson>,
    anchors: Vec<AnchorJson>,
    summary: String,
}

impl From<&pb::VerifyAuditLogResponse> for VerifyJson {
    fn from(r: &pb::VerifyAuditLogResponse) -> Self {
        Self {
            ok: r.ok,
            events: r.events,
            head: r.head.as_ref().map(|h| PositionJson {
                seq: h.seq,
                hash: h.hash.clone(),
            }),
            chain_break: r.chain_break.as_ref().map(|b| ChainBreakJson {
                seq: b.seq,
                kind: b.kind.clone(),
                message: b.message.clone(),
            }),
            anchors: r
                .anchors
                .iter()
                .map(|a| AnchorJson {
                    source: a.source.clone(),
                    seq: a.seq,
                    hash: non_empty(&a.hash),
                    status: a.status.clone(),
                    message: a.message.clone(),
                })
                .collect(),
            summary: r.summary.clone(),
        }
    }
}

/// `audit verify` as text: the summary, then the break and each anchor.
pub fn verify_text(r: &pb::VerifyAuditLogResponse) -> String {
    let mut out = format!("{}\n", r.summary);
    if let Some(b) = &r.chain_break {
        line(&mut out, "Break at seq", b.seq);
        line(&mut out, "Break kind", &b.kind);
        line(&mut out, "Verified events", r.events);
        if let Some(h) = &r.head {
            line(
                &mut out,
                "Last good event",
                format!("seq {} hash {}", h.seq, h.hash),
            );
        }
    }
    for a in &r.anchors {
        line(
            &mut out,
            "Anchor",
            format!("{}: seq {} {} ({})", a.source, a.seq, a.status, a.message),
        );
    }
    if r.anchors.is_empty() {
        line(
            &mut out,
            "Anchors",
            "none (no NATS cursor, no --expect-head): a truncated tail cannot be detected",
        );
    }
    out
}

/// A revocation or denial in `audit trace` JSON output.
#[derive(Debug, Serialize)]
pub struct RelatedJson {
    seq: i64,
    hash: String,
    kind: String,
    time_ms: i64,
    time: String,
    actor: String,
    outcome: String,
    reason: Option<String>,
}

/// A hop in `audit trace` JSON output.
#[derive(Debug, Serialize)]
pub struct HopJson {
    seq: i64,
    hash: String,
    kind: String,
    time_ms: i64,
    time: String,
    actor: String,
    authorized_by: Option<String>,
    subject: String,
    token_id: String,
    parent_token_id: Option<String>,
    chain: Vec<String>,
    holder: Option<String>,
    rights: Vec<String>,
    revocation_ids: Vec<String>,
    expires_at: Option<i64>,
    expires: Option<String>,
    root_key_id: Option<i64>,
    revoked: bool,
    related: Vec<RelatedJson>,
}

/// `audit trace` in JSON output.
#[derive(Debug, Serialize)]
pub struct TraceJson {
    token_id: String,
    subject: String,
    holder: Option<String>,
    complete: bool,
    hops: Vec<HopJson>,
    warnings: Vec<String>,
}

fn is_revocation(r: &pb::DelegationRelatedEvent) -> bool {
    r.kind == "delegation.revoke" && r.outcome == "ok"
}

impl From<&pb::DelegationTrace> for TraceJson {
    fn from(t: &pb::DelegationTrace) -> Self {
        Self {
            token_id: t.token_id.clone(),
            subject: t.subject.clone(),
            holder: non_empty(&t.holder),
            complete: t.complete,
            hops: t
                .hops
                .iter()
                .map(|h| HopJson {
                    seq: h.seq,
                    hash: h.hash.clone(),
                    kind: h.kind.clone(),
                    time_ms: h.time_ms,
                    time: time_ms(h.time_ms),
                    actor: h.actor.clone(),
                    authorized_by: non_empty(&h.authorized_by),
                    subject: h.subject.clone(),
                    token_id: h.token_id.clone(),
                    parent_token_id: non_empty(&h.parent_token_id),
                    chain: h.chain.clone(),
                    holder: non_empty(&h.holder),
                    rights: h.rights.clone(),
                    revocation_ids: h.revocation_ids.clone(),
                    expires_at: h.expires_at,
                    expires: h.expires_at.map(time),
                    root_key_id: h.root_key_id,
                    revoked: h.related.iter().any(is_revocation),
                    related: h
                        .related
                        .iter()
                        .map(|r| RelatedJson {
                            seq: r.seq,
                            hash: r.hash.clone(),
                            kind: r.kind.clone(),
                            time_ms: r.time_ms,
                            time: time_ms(r.time_ms),
                            actor: r.actor.clone(),
                            outcome: r.outcome.clone(),
                            reason: non_empty(&r.reason),
                        })
                        .collect(),
                })
                .collect(),
            warnings: t.warnings.clone(),
        }
    }
}

/// `audit trace` as a tree: the subject, then each token indented under its parent, down to the
/// token asked for.
pub fn trace_text(t: &pb::DelegationTrace) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Delegation chain of token {} ({} {}, {})",
        t.token_id,
        t.hops.len(),
        if t.hops.len() == 1 { "token" } else { "tokens" },
        if t.complete { "complete" } else { "INCOMPLETE" }
    );
    let _ = writeln!(out, "Subject: {}", t.subject);
    for (depth, h) in t.hops.iter().enumerate() {
        let pad = "    ".repeat(depth);
        let field = |out: &mut String, label: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{pad}    {label:<14} {value}");
        };
        let _ = writeln!(
            out,
            "{pad}└── {} {} (seq {})",
            h.kind,
            time_ms(h.time_ms),
            h.seq
        );
        match non_empty(&h.parent_token_id) {
            Some(p) => field(&mut out, "token", &format!("{} (from {p})", h.token_id)),
            None => field(&mut out, "token", &h.token_id),
        }
        field(&mut out, "actor", &h.actor);
        field(
            &mut out,
            "authorized by",
            &non_empty(&h.authorized_by).unwrap_or_else(|| "(not recorded)".to_owned()),
        );
        field(
            &mut out,
            "holder",
            &non_empty(&h.holder).unwrap_or_else(|| "(not recorded)".to_owned()),
        );
        if !h.chain.is_empty() {
            field(&mut out, "chain", &h.chain.join(" > "));
        }
        field(
            &mut out,
            "rights",
            &if h.rights.is_empty() {
                "(none)".to_owned()
            } else {
                h.rights.join(", ")
            },
        );
        if let Some(e) = h.expires_at {
            field(&mut out, "expires", &time(e));
        }
        if let Some(k) = h.root_key_id {
            field(&mut out, "root key id", &k);
        }
        if h.subject != t.subject {
            field(&mut out, "subject", &h.subject);
        }
        for r in &h.related {
            let what = if is_revocation(r) {
                "REVOKED".to_owned()
            } else if r.outcome == "denied" || r.kind == "delegation.denied" {
                "DENIED".to_owned()
            } else {
                r.kind.clone()
            };
            let reason = non_empty(&r.reason).map_or_else(String::new, |x| format!(": {x}"));
            field(
                &mut out,
                &what,
                &format!(
                    "{} by {} ({} seq {}){reason}",
                    time_ms(r.time_ms),
                    r.actor,
                    r.kind,
                    r.seq
                ),
            );
        }
    }
    if !t.holder.is_empty() {
        let _ = writeln!(out, "Current holder: {}", t.holder);
    }
    if !t.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for w in &t.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}

/// An audit event in JSON output.
#[derive(Debug, Serialize)]
pub struct AuditEventJson {
    seq: i64,
    time_ms: i64,
    time: String,
    kind: String,
    actor: String,
    subject: String,
    outcome: String,
    details: serde_json::Value,
    prev_hash: String,
    hash: String,
}

impl From<&pb::AuditEvent> for AuditEventJson {
    fn from(e: &pb::AuditEvent) -> Self {
        Self {
            seq: e.seq,
            time_ms: e.time_ms,
            time: time_ms(e.time_ms),
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            subject: e.subject.clone(),
            outcome: e.outcome.clone(),
            // The issuer sends valid JSON; anything else is shown as the string it is.
            details: serde_json::from_str(&e.details_json)
                .unwrap_or_else(|_| serde_json::Value::String(e.details_json.clone())),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        }
    }
}

/// Audit events as text, one line each: seq, time, kind, outcome, actor, subject, details.
pub fn audit_events_text(events: &[pb::AuditEvent]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<24}  {:<22} {:<7} {:<28} {:<40} DETAILS",
        "SEQ", "TIME", "KIND", "OUTCOME", "ACTOR", "SUBJECT"
    );
    for e in events {
        let _ = writeln!(
            out,
            "{:>6}  {:<24}  {:<22} {:<7} {:<28} {:<40} {}",
            e.seq,
            time_ms(e.time_ms),
            e.kind,
            e.outcome,
            e.actor,
            e.subject,
            e.details_json
        );
    }
    out
}
