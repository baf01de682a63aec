//! The admin RPCs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use signet_attestors::join_token;
use signet_proto::admin as pb;
use signet_proto::admin::admin_server::Admin;
use signet_spiffe::TrustDomain;
use signet_spiffe::bundle::Bundle;
use signet_store::{EntryFilter, JoinToken, NewEntry, Page, RegistrationEntry, StoredBundle};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use zeroize::Zeroizing;

use super::{audit as audit_rpc, convert, delegation as delegation_rpc, federation as fed};
use crate::audit;
use crate::ca_sync::{CaSync, unix_secs};
use crate::entries::{self, EntryKind, EntryRules};
use crate::federation::Federation;
use crate::health::Health;
use crate::metrics::code_name;
use crate::state::Issuer;

/// Default TTL of a join token.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Longest TTL of a join token.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of the admin API.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The uid the issuer runs as; it and root may use the API.
    pub server_uid: u32,
    /// The CA TTL: upper bound of minted and entry X509-SVID TTLs.
    pub ca_ttl: Duration,
}

/// The admin gRPC service.
pub struct AdminService {
    issuer: Arc<Issuer>,
    ca_sync: Arc<CaSync>,
    health: Arc<Health>,
    federation: Arc<Federation>,
    opts: AdminOptions,
    rules: EntryRules,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn parse_selectors(values: &[String]) -> Result<Vec<signet_store::Selector>, Status> {
    values
        .iter()
        .map(|s| entries::parse_selector(s).map_err(invalid))
        .collect()
}

/// The TTL of a minted SVID or a join token: `requested` seconds, or `default` when 0; refused
/// above `max` (`bound` names it in the error).
fn requested_ttl(
    requested: u32,
    default: Duration,
    max: Duration,
    bound: &str,
) -> Result<Duration, Status> {
    let ttl = match requested {
        0 => default,
        s => Duration::from_secs(u64::from(s)),
    };
    if ttl > max {
        return Err(Status::invalid_argument(format!(
            "ttl {}s is out of range: expected 1s to {}s ({bound})",
            ttl.as_secs(),
            max.as_secs()
        )));
    }
    Ok(ttl)
}

fn format_of(value: i32) -> pb::BundleFormat {
    pb::BundleFormat::try_from(value).unwrap_or(pb::BundleFormat::Unspecified)
}

impl AdminService {
    /// Creates the service.
    pub fn new(
        issuer: Arc<Issuer>,
        ca_sync: Arc<CaSync>,
        health: Arc<Health>,
        federation: Arc<Federation>,
        opts: AdminOptions,
    ) -> Self {
        let rules = EntryRules {
            trust_domain: issuer.trust_domain.clone(),
            max_x509_svid_ttl: opts.ca_ttl,
            max_jwt_svid_ttl: crate::config::MAX_JWT_SVID_TTL,
        };
        Self {
            issuer,
            ca_sync,
            health,
            federation,
            opts,
            rules,
        }
    }

    /// Checks the caller's credentials, runs `f` in an RPC span, logs and counts the outcome.
    async fn handle<Req, T, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(String, Req) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let uid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        let actor = match uid {
            Some(uid) => format!("admin:uid={uid}"),
            None => "admin:uid=unknown".to_owned(),
        };
        let span = tracing::info_span!("rpc", api = "admin", method, actor = %actor);
        let start = Instant::now();
        let result = async {
            match uid {
                Some(uid) if uid == 0 || uid == self.opts.server_uid => {
                    f(actor.clone(), request.into_inner()).await
                }
                _ => {
                    audit::record(
                        self.issuer.store.as_ref(),
                        "admin.call",
                        &actor,
                        method,
                        "denied",
                        serde_json::json!({}),
                    )
                    .await;
                    Err(Status::permission_denied(format!(
                        "the admin API is reserved to root and uid {}",
                        self.opts.server_uid
                    )))
                }
            }
        }
        .instrument(span.clone())
        .await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.issuer
            .metrics
            .record_rpc("admin", method, code_name(code));
        let _enter = span.enter();
        let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        let name = code_name(code);
        match &result {
            Ok(_) => tracing::info!(code = name, elapsed_ms, "admin call"),
            Err(s) => match code {
                tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::DataLoss => {
                    tracing::error!(
                        code = name,
                        elapsed_ms,
                        error = s.message(),
                        "admin call failed"
                    )
                }
                tonic::Code::PermissionDenied => {
                    tracing::warn!(
                        code = name,
                        elapsed_ms,
                        error = s.message(),
                        "admin call denied"
                    )
                }
                _ => tracing::info!(
                    code = name,
                    elapsed_ms,
                    error = s.message(),
                    "admin call refused"
                ),
            },
        }
        result.map(Response::new)
    }

    async fn audit(&self, kind: &str, actor: &str, subject: &str, details: serde_json::Value) {
        audit::record(
            self.issuer.store.as_ref(),
            kind,
            actor,
            subject,
            "ok",
            details,
        )
        .await;
    }

    /// After a change that agents must see (entries, bundles): wakes the agents' watches and
    /// records the change in the audit trail.
    async fn changed(&self, kind: &str, actor: &str, subject: &str, details: serde_json::Value) {
        self.issuer.notifier.notify();
        self.audit(kind, actor, subject, details).await;
    }

    fn validate(&self, entry: NewEntry) -> Result<NewEntry, Status> {
        entries::validate_entry(entry, EntryKind::Workload, &self.rules, SystemTime::now())
            .map_err(invalid)
    }

    async fn get_entry_record(&self, id: &str) -> Result<RegistrationEntry, Status> {
        self.issuer
            .store
            .get_entry(id)
            .await
            .map_err(convert::store_status)?
            .ok_or_else(|| Status::not_found(format!("entry {id:?} not found")))
    }

    async fn create_entry_impl(
        &self,
        actor: String,
        r: pb::CreateEntryRequest,
    ) -> Result<pb::Entry, Status> {
        let entry = self.validate(NewEntry {
            spiffe_id: r.spiffe_id,
            parent_id: r.parent_id,
            selectors: parse_selectors(&r.selectors)?,
            x509_svid_ttl: r.x509_svid_ttl,
            jwt_svid_ttl: r.jwt_svid_ttl,
            dns_names: r.dns_names,
            hint: r.hint,
            admin: r.admin,
            downstream: r.downstream,
            federates_with: r.federates_with,
            expires_at: r.expires_at,
        })?;
        let created = self
            .issuer
            .store
            .create_entry(entry)
            .await
            .map_err(convert::store_status)?;
        self.changed(
            "entry.create",
            &actor,
            &created.id,
            serde_json::to_value(&created).unwrap_or_default(),
        )
        .await;
        Ok(convert::entry(created))
    }

    async fn list_entries_impl(
        &self,
        r: pb::ListEntriesRequest,
    ) -> Result<pb::ListEntriesResponse, Status> {
        let mut entries_out = Vec::new();
        let mut next = None;
        if !r.id.is_empty() {
            let e = self.get_entry_record(&r.id).await?;
            let f = &e.fields;
            let matches = (r.spiffe_id.is_empty() || f.spiffe_id == r.spiffe_id)
                && (r.parent_id.is_empty() || f.parent_id == r.parent_id)
                && parse_selectors(&r.selectors)?
                    .iter()
                    .all(|s| f.selectors.contains(s));
            if matches {
                entries_out.push(convert::entry(e));
            }
        } else {
            let filter = EntryFilter {
                spiffe_id: Some(r.spiffe_id).filter(|s| !s.is_empty()),
                parent_id: Some(r.parent_id).filter(|s| !s.is_empty()),
                selectors: parse_selectors(&r.selectors)?,
            };
            let page = Page {
                size: r.page_size,
                after: Some(r.page_token).filter(|s| !s.is_empty()),
            };
            let (list, cursor) = self
                .issuer
                .store
                .list_entries(&filter, &page)
                .await
                .map_err(convert::store_status)?;
            entries_out = list.into_iter().map(convert::entry).collect();
            next = cursor;
        }
        Ok(pb::ListEntriesResponse {
            entries: entries_out,
            next_page_token: next.unwrap_or_default(),
        })
    }

    async fn update_entry_impl(
        &self,
        actor: String,
        r: pb::UpdateEntryRequest,
    ) -> Result<pb::Entry, Status> {
        if r.id.is_empty() {
            return Err(Status::invalid_argument("id is required"));
        }
        let old = self.get_entry_record(&r.id).await?;
        let mut f = old.fields.clone();
        if let Some(v) = r.spiffe_id {
            f.spiffe_id = v;
        }
        if let Some(v) = r.parent_id {
            f.parent_id = v;
        }
        if let Some(v) = r.selectors {
            f.selectors = parse_selectors(&v.values)?;
        }
        if let Some(v) = r.x509_svid_ttl {
            f.x509_svid_ttl = v;
        }
        if let Some(v) = r.jwt_svid_ttl {
            f.jwt_svid_ttl = v;
        }
        if let Some(v) = r.dns_names {
            f.dns_names = v.values;
        }
        if let Some(v) = r.hint {
            f.hint = v;
        }
        if let Some(v) = r.admin {
            f.admin = v;
        }
        if let Some(v) = r.downstream {
            f.downstream = v;
        }
        if let Some(v) = r.federates_with {
            f.federates_with = v.values;
        }
        if let Some(v) = r.expires_at {
            f.expires_at = (v != 0).then_some(v);
        }
        let fields = self.validate(f)?;
        let updated = self
            .issuer
            .store
            .update_entry(RegistrationEntry {
                id: old.id.clone(),
                fields,
                revision: old.revision,
                created_at: old.created_at,
            })
            .await
            .map_err(convert::store_status)?;
        self.changed(
            "entry.update",
            &actor,
            &updated.id,
            serde_json::json!({"before": old, "after": updated}),
        )
        .await;
        Ok(convert::entry(updated))
    }

    async fn delete_entry_impl(
        &self,
        actor: String,
        r: pb::DeleteEntryRequest,
    ) -> Result<pb::Entry, Status> {
        if r.id.is_empty() {
            return Err(Status::invalid_argument("id is required"));
        }
        let deleted = self
            .issuer
            .store
            .delete_entry(&r.id)
            .await
            .map_err(convert::store_status)?;
        self.changed(
            "entry.delete",
            &actor,
            &deleted.id,
            serde_json::to_value(&deleted).unwrap_or_default(),
        )
        .await;
        Ok(convert::entry(deleted))
    }

    async fn generate_token_impl(
        &self,
        actor: String,
        r: pb::GenerateJoinTokenRequest,
    ) -> Result<pb::GenerateJoinTokenResponse, Status> {
        let ttl = requested_ttl(
            r.ttl,
            DEFAULT_JOIN_TOKEN_TTL,
            MAX_JOIN_TOKEN_TTL,
            "the longest join token TTL",
        )?;
        let td = &self.issuer.trust_domain;
        let alias = if r.alias_spiffe_id.is_empty() {
            None
        } else {
            Some(
                entries::parse_workload_id("spiffe_id", &r.alias_spiffe_id, td)
                    .map_err(invalid)?
                    .to_string(),
            )
        };
        let token = join_token::generate_join_token();
        let token_hash = join_token::hash_join_token(&token);
        let agent_id =
            join_token::agent_id(td, &token).map_err(|e| Status::internal(e.to_string()))?;
        let now = unix_secs(SystemTime::now());
        let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        self.issuer
            .store
            .create_join_token(JoinToken {
                token_hash: token_hash.clone(),
                expires_at,
                alias_spiffe_id: alias.clone(),
                created_at: now,
                used_at: None,
            })
            .await
            .map_err(convert::store_status)?;
        // The token itself never reaches the log or the audit trail: only a prefix of its hash.
        self.audit(
            "join_token.generate",
            &actor,
            &format!("sha256:{}", &token_hash[..16]),
            serde_json::json!({"expires_at": expires_at, "alias_spiffe_id": alias}),
        )
        .await;
        Ok(pb::GenerateJoinTokenResponse {
            token: token.to_string(),
            expires_at,
            agent_spiffe_id: agent_id.to_string(),
            alias_spiffe_id: alias.unwrap_or_default(),
        })
    }

    fn agent_id(&self, value: &str) -> Result<String, Status> {
        Ok(
            entries::parse_id_in_domain("spiffe_id", value, &self.issuer.trust_domain)
                .map_err(invalid)?
                .to_string(),
        )
    }

    async fn get_agent_record(&self, id: &str) -> Result<signet_store::AttestedAgent, Status> {
        self.issuer
            .store
            .get_agent(id)
            .await
            .map_err(convert::store_status)?
            .ok_or_else(|| Status::not_found(format!("agent {id:?} not found")))
    }

    async fn list_agents_impl(&self) -> Result<pb::ListAgentsResponse, Status> {
        let agents = self
            .issuer
            .store
            .list_agents()
            .await
            .map_err(convert::store_status)?;
        Ok(pb::ListAgentsResponse {
            agents: agents.into_iter().map(convert::agent).collect(),
        })
    }

    async fn get_agent_impl(&self, r: pb::AgentRequest) -> Result<pb::Agent, Status> {
        let id = self.agent_id(&r.spiffe_id)?;
        Ok(convert::agent(self.get_agent_record(&id).await?))
    }

    async fn evict_agent_impl(
        &self,
        actor: String,
        r: pb::AgentRequest,
    ) -> Result<pb::Agent, Status> {
        let id = self.agent_id(&r.spiffe_id)?;
        let agent = self.get_agent_record(&id).await?;
        self.issuer
            .store
            .delete_agent(&id)
            .await
            .map_err(convert::store_status)?;
        self.audit("agent.evict", &actor, &id, serde_json::json!({}))
            .await;
        Ok(convert::agent(agent))
    }

    async fn ban_agent_impl(
        &self,
        actor: String,
        r: pb::BanAgentRequest,
    ) -> Result<pb::Agent, Status> {
        let id = self.agent_id(&r.spiffe_id)?;
        self.get_agent_record(&id).await?;
        self.issuer
            .store
            .set_agent_banned(&id, r.banned)
            .await
            .map_err(convert::store_status)?;
        let kind = if r.banned { "agent.ban" } else { "agent.unban" };
        self.audit(kind, &actor, &id, serde_json::json!({})).await;
        Ok(convert::agent(self.get_agent_record(&id).await?))
    }

    fn trust_domain_arg(&self, value: &str) -> Result<TrustDomain, Status> {
        TrustDomain::new(value)
            .map_err(|e| Status::invalid_argument(format!("trust domain {value:?}: {e}")))
    }

    async fn get_stored_bundle(&self, td: &TrustDomain) -> Result<StoredBundle, Status> {
        self.issuer
            .store
            .get_bundle(td.name())
            .await
            .map_err(convert::store_status)?
            .ok_or_else(|| Status::not_found(format!("no bundle for trust domain {td}")))
    }

    async fn get_bundle_impl(&self, r: pb::GetBundleRequest) -> Result<pb::BundleDocument, Status> {
        let td = if r.trust_domain.is_empty() {
            self.issuer.trust_domain.clone()
        } else {
            self.trust_domain_arg(&r.trust_domain)?
        };
        let stored = self.get_stored_bundle(&td).await?;
        let format = match format_of(r.format) {
            pb::BundleFormat::Unspecified => pb::BundleFormat::Pem,
            f => f,
        };
        let content = match format {
            pb::BundleFormat::Pem => Bundle::from_json(&td, stored.document.as_bytes())
                .map_err(|e| Status::internal(format!("stored bundle of {td}: {e}")))?
                .to_pem(),
            _ => {
                let mut doc = stored.document;
                if !doc.ends_with('\n') {
                    doc.push('\n');
                }
                doc
            }
        };
        Ok(pb::BundleDocument {
            trust_domain: td.name().to_owned(),
            format: format as i32,
            content,
        })
    }

    async fn set_bundle_impl(
        &self,
        actor: String,
        r: pb::SetFederatedBundleRequest,
    ) -> Result<pb::BundleInfo, Status> {
        let td = self.trust_domain_arg(&r.trust_domain)?;
        if td == self.issuer.trust_domain {
            return Err(Status::invalid_argument(format!(
                "{td} is the issuer's own trust domain: its bundle is managed by the CA"
            )));
        }
        let previous = self
            .issuer
            .store
            .get_bundle(td.name())
            .await
            .map_err(convert::store_status)?;
        let mut bundle = match format_of(r.format) {
            pb::BundleFormat::Pem => Bundle::from_pem(&td, &r.content),
            pb::BundleFormat::Spiffe => Bundle::from_json(&td, &r.content),
            pb::BundleFormat::Unspecified => {
                return Err(Status::invalid_argument("format must be pem or spiffe"));
            }
        }
        .map_err(|e| Status::invalid_argument(format!("bundle of {td}: {e}")))?;
        if format_of(r.format) == pb::BundleFormat::Pem {
            // A PEM file has no sequence: continue the stored one so that consumers see a change.
            let last = previous
                .as_ref()
                .and_then(|p| Bundle::from_json(&td, p.document.as_bytes()).ok())
                .map_or(0, |b| b.sequence);
            bundle.sequence = last.saturating_add(1);
        }
        let document = bundle
            .to_json()
            .map_err(|e| Status::invalid_argument(format!("bundle of {td}: {e}")))?;
        let stored = StoredBundle {
            trust_domain: td.name().to_owned(),
            document,
            own: false,
            updated_at: unix_secs(SystemTime::now()),
        };
        self.issuer
            .store
            .set_bundle(stored.clone())
            .await
            .map_err(convert::store_status)?;
        self.changed(
            "bundle.set",
            &actor,
            td.name(),
            serde_json::json!({"sequence": bundle.sequence, "x509_authorities": bundle.x509_authorities.len(), "jwt_authorities": bundle.jwt_authorities.len(), "wit_authorities": bundle.wit_authorities.len(), "replaced": previous.is_some()}),
        )
        .await;
        Ok(bundle_info(&stored))
    }

    async fn list_bundles_impl(&self) -> Result<pb::ListBundlesResponse, Status> {
        let bundles = self
            .issuer
            .store
            .list_bundles()
            .await
            .map_err(convert::store_status)?;
        Ok(pb::ListBundlesResponse {
            bundles: bundles.iter().map(bundle_info).collect(),
        })
    }

    async fn delete_bundle_impl(
        &self,
        actor: String,
        r: pb::DeleteFederatedBundleRequest,
    ) -> Result<pb::BundleInfo, Status> {
        let td = self.trust_domain_arg(&r.trust_domain)?;
        if td == self.issuer.trust_domain {
            return Err(Status::invalid_argument(format!(
                "{td} is the issuer's own trust domain: its bundle cannot be deleted"
            )));
        }
        let stored = self.get_stored_bundle(&td).await?;
        self.issuer
            .store
            .delete_bundle(td.name())
            .await
            .map_err(convert::store_status)?;
        self.changed("bundle.delete", &actor, td.name(), serde_json::json!({}))
            .await;
        Ok(bundle_info(&stored))
    }

    async fn mint_impl(
        &self,
        actor: String,
        r: pb::MintX509SvidRequest,
    ) -> Result<pb::MintX509SvidResponse, Status> {
        let td = &self.issuer.trust_domain;
        let id = entries::parse_workload_id("spiffe_id", &r.spiffe_id, td).map_err(invalid)?;
        let ttl = requested_ttl(
            r.ttl,
            self.issuer.defaults.x509_svid_ttl,
            self.opts.ca_ttl,
            "the CA TTL",
        )?;
        let mut dns_names = Vec::with_capacity(r.dns_names.len());
        for n in r.dns_names {
            entries::validate_dns_name(&n).map_err(invalid)?;
            dns_names.push(n.to_ascii_lowercase());
        }
        let key = signet_ca::generate_key(signet_ca::KeyType::EcP256)
            .map_err(|e| Status::internal(format!("key generation: {e}")))?;
        let start = Instant::now();
        let issued = self
            .issuer
            .ca
            .sign_x509_svid(
                &signet_ca::X509SvidRequest {
                    spiffe_id: &id,
                    public_key_spki_der: &key.spki_der,
                    ttl,
                    dns_names: &dns_names,
                },
                SystemTime::now(),
            )
            .map_err(|e| Status::failed_precondition(format!("signing: {e}")))?;
        self.issuer
            .metrics
            .record_signature("x509_svid", start.elapsed().as_secs_f64());
        let pem_config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        let chain: String = issued
            .cert_chain_der
            .iter()
            .map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der.clone()), pem_config))
            .collect();
        let key_pem = Zeroizing::new(pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", key.pkcs8_der.to_vec()),
            pem_config,
        ));
        let bundle_pem = self.ca_sync.own_bundle().to_pem();
        self.audit(
            "x509.mint",
            &actor,
            &id.to_string(),
            serde_json::json!({"serial": issued.serial_hex, "not_after": unix_secs(issued.not_after), "dns_names": dns_names}),
        )
        .await;
        Ok(pb::MintX509SvidResponse {
            spiffe_id: id.to_string(),
            cert_chain_pem: chain,
            private_key_pem: key_pem.to_string(),
            bundle_pem,
            expires_at: unix_secs(issued.not_after),
            serial: issued.serial_hex,
        })
    }

    async fn mint_jwt_impl(
        &self,
        actor: String,
        r: pb::MintJwtSvidRequest,
    ) -> Result<pb::MintJwtSvidResponse, Status> {
        let issuer = &self.issuer;
        let id = entries::parse_workload_id("spiffe_id", &r.spiffe_id, &issuer.trust_domain)
            .map_err(invalid)?;
        entries::validate_audiences(&r.audience).map_err(invalid)?;
        let ttl = requested_ttl(
            r.ttl_seconds,
            issuer.defaults.jwt_svid_ttl,
            issuer.jwt.config().max_token_ttl,
            "the longest JWT-SVID TTL",
        )?;
        let start = Instant::now();
        let minted = issuer
            .jwt
            .mint_jwt_svid(
                &id,
                &r.audience,
                ttl,
                SystemTime::now(),
                issuer.jwt_issuer.as_deref(),
            )
            .map_err(convert::jwt_status)?;
        issuer
            .metrics
            .record_signature("jwt_svid", start.elapsed().as_secs_f64());
        let expires_at = unix_secs(minted.expiry);
        // The token is a bearer credential: the audit trail gets its `jti`, never the token.
        self.audit(
            "jwt.mint",
            &actor,
            &id.to_string(),
            serde_json::json!({"audience": r.audience, "jti": minted.jti, "kid": minted.key_id, "exp": expires_at}),
        )
        .await;
        Ok(pb::MintJwtSvidResponse {
            // Moved into the reply: the issuer keeps no copy of the token.
            token: minted.token,
            spiffe_id: id.to_string(),
            audience: r.audience,
            expires_at,
            issued_at: unix_secs(minted.issued_at),
            key_id: minted.key_id,
            jti: minted.jti,
        })
    }

    async fn create_federation_impl(
        &self,
        actor: String,
        r: pb::CreateFederationRelationshipRequest,
    ) -> Result<pb::FederationRelationship, Status> {
        let (rel, bundle) = fed::create_args(r)?;
        let details = fed::audit_details(&rel, bundle.as_ref());
        let td = rel.trust_domain.clone();
        let view = self
            .federation
            .create(rel, bundle)
            .await
            .map_err(fed::status)?;
        self.audit("federation.create", &actor, td.name(), details)
            .await;
        Ok(fed::message(&self.issuer, view).await)
    }

    async fn update_federation_impl(
        &self,
        actor: String,
        r: pb::UpdateFederationRelationshipRequest,
    ) -> Result<pb::FederationRelationship, Status> {
        let td = fed::trust_domain(&r.trust_domain)?;
        let old = self.federation.stored(&td).await.map_err(fed::status)?;
        let (rel, bundle) = fed::update_args(old, r)?;
        let details = fed::audit_details(&rel, bundle.as_ref());
        let view = self
            .federation
            .update(rel, bundle)
            .await
            .map_err(fed::status)?;
        self.audit("federation.update", &actor, td.name(), details)
            .await;
        Ok(fed::message(&self.issuer, view).await)
    }

    async fn delete_federation_impl(
        &self,
        actor: String,
        r: pb::FederationRelationshipRequest,
    ) -> Result<pb::FederationRelationship, Status> {
        let td = fed::trust_domain(&r.trust_domain)?;
        let view = self.federation.delete(&td).await.map_err(fed::status)?;
        self.audit(
            "federation.delete",
            &actor,
            td.name(),
            fed::audit_details(&view.relationship, None),
        )
        .await;
        Ok(fed::message(&self.issuer, view).await)
    }

    async fn list_federation_impl(
        &self,
    ) -> Result<pb::ListFederationRelationshipsResponse, Status> {
        let views = self.federation.list().await.map_err(fed::status)?;
        let mut relationships = Vec::with_capacity(views.len());
        for v in views {
            relationships.push(fed::message(&self.issuer, v).await);
        }
        Ok(pb::ListFederationRelationshipsResponse { relationships })
    }

    async fn get_federation_impl(
        &self,
        r: pb::FederationRelationshipRequest,
    ) -> Result<pb::FederationRelationship, Status> {
        let td = fed::trust_domain(&r.trust_domain)?;
        let view = self.federation.get(&td).await.map_err(fed::status)?;
        Ok(fed::message(&self.issuer, view).await)
    }

    async fn refresh_federation_impl(
        &self,
        r: pb::FederationRelationshipRequest,
    ) -> Result<pb::RefreshFederationRelationshipResponse, Status> {
        let td = fed::trust_domain(&r.trust_domain)?;
        let (outcome, view) = self.federation.refresh(&td).await.map_err(fed::status)?;
        Ok(pb::RefreshFederationRelationshipResponse {
            relationship: Some(fed::message(&self.issuer, view).await),
            updated: outcome.updated,
            sequence: outcome.sequence,
        })
    }

    async fn healthcheck_impl(&self) -> Result<pb::HealthcheckResponse, Status> {
        let r = self.health.readiness().await;
        Ok(pb::HealthcheckResponse {
            healthy: r.ready,
            store_ok: r.store_ok,
            ca_active: r.ca_active,
            node_api_bound: r.node_api_bound,
            trust_domain: self.issuer.trust_domain.name().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            detail: r.store_error.unwrap_or_default(),
        })
    }

    fn ca_status(&self) -> pb::CaStatus {
        pb::CaStatus {
            slots: self.issuer.ca.slots().iter().map(convert::slot).collect(),
            bundle_sequence: self.issuer.ca.bundle_sequence(),
        }
    }

    async fn ca_change(&self, actor: String, activate: bool) -> Result<pb::CaStatus, Status> {
        let now = SystemTime::now();
        let slot = if activate {
            self.issuer.ca.activate(now)
        } else {
            self.issuer.ca.prepare(now)
        }
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
        self.ca_sync
            .persist()
            .await
            .map_err(|e| Status::unavailable(format!("CA changed but not persisted: {e}")))?;
        let kind = if activate {
            "ca.activate"
        } else {
            "ca.prepare"
        };
        self.audit(
            kind,
            &actor,
            &slot.id,
            serde_json::json!({"fingerprint_sha256": slot.fingerprint_sha256}),
        )
        .await;
        Ok(self.ca_status())
    }
}

fn bundle_info(b: &StoredBundle) -> pb::BundleInfo {
    let parsed = TrustDomain::new(&b.trust_domain)
        .ok()
        .and_then(|td| Bundle::from_json(&td, b.document.as_bytes()).ok());
    pb::BundleInfo {
        trust_domain: b.trust_domain.clone(),
        own: b.own,
        updated_at: b.updated_at,
        sequence: parsed.as_ref().map_or(0, |p| p.sequence),
        x509_authorities: parsed.as_ref().map_or(0, |p| {
            u32::try_from(p.x509_authorities.len()).unwrap_or(u32::MAX)
        }),
        jwt_authorities: parsed.as_ref().map_or(0, |p| {
            u32::try_from(p.jwt_authorities.len()).unwrap_or(u32::MAX)
        }),
        wit_authorities: parsed.as_ref().map_or(0, |p| {
            u32::try_from(p.wit_authorities.len()).unwrap_or(u32::MAX)
        }),
    }
}

/// Implements [`Admin`] from a table of RPCs: `rpc(Request) -> Reply = "Method", |actor, r|
/// handler;` makes `async fn rpc` run `handler` (a future over `self`) through
/// [`AdminService::handle`] under the method name. `self` is passed in first so that the handlers
/// can use it.
macro_rules! admin_rpcs {
    ($this:ident; $(
        $rpc:ident($req:ty) -> $reply:ty =
            $method:literal, |$actor:pat_param, $r:pat_param| $body:expr;
    )*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(
                async fn $rpc(&$this, request: Request<$req>) -> Result<Response<$reply>, Status> {
                    $this.handle($method, request, |$actor, $r| $body).await
                }
            )*
        }
    };
}

admin_rpcs! { self;
    create_entry(pb::CreateEntryRequest) -> pb::Entry =
        "CreateEntry", |a, r| self.create_entry_impl(a, r);
    list_entries(pb::ListEntriesRequest) -> pb::ListEntriesResponse =
        "ListEntries", |_, r| self.list_entries_impl(r);
    update_entry(pb::UpdateEntryRequest) -> pb::Entry =
        "UpdateEntry", |a, r| self.update_entry_impl(a, r);
    delete_entry(pb::DeleteEntryRequest) -> pb::Entry =
        "DeleteEntry", |a, r| self.delete_entry_impl(a, r);
    generate_join_token(pb::GenerateJoinTokenRequest) -> pb::GenerateJoinTokenResponse =
        "GenerateJoinToken", |a, r| self.generate_token_impl(a, r);
    list_agents(pb::ListAgentsRequest) -> pb::ListAgentsResponse =
        "ListAgents", |_, _| self.list_agents_impl();
    get_agent(pb::AgentRequest) -> pb::Agent =
        "GetAgent", |_, r| self.get_agent_impl(r);
    evict_agent(pb::AgentRequest) -> pb::Agent =
        "EvictAgent", |a, r| self.evict_agent_impl(a, r);
    ban_agent(pb::BanAgentRequest) -> pb::Agent =
        "BanAgent", |a, r| self.ban_agent_impl(a, r);
    get_bundle(pb::GetBundleRequest) -> pb::BundleDocument =
        "GetBundle", |_, r| self.get_bundle_impl(r);
    set_federated_bundle(pb::SetFederatedBundleRequest) -> pb::BundleInfo =
        "SetFederatedBundle", |a, r| self.set_bundle_impl(a, r);
    list_bundles(pb::ListBundlesRequest) -> pb::ListBundlesResponse =
        "ListBundles", |_, _| self.list_bundles_impl();
    delete_federated_bundle(pb::DeleteFederatedBundleRequest) -> pb::BundleInfo =
        "DeleteFederatedBundle", |a, r| self.delete_bundle_impl(a, r);
    create_federation_relationship(pb::CreateFederationRelationshipRequest)
        -> pb::FederationRelationship =
        "CreateFederationRelationship", |a, r| self.create_federation_impl(a, r);
    list_federation_relationships(pb::ListFederationRelationshipsRequest)
        -> pb::ListFederationRelationshipsResponse =
        "ListFederationRelationships", |_, _| self.list_federation_impl();
    get_federation_relationship(pb::FederationRelationshipRequest)
        -> pb::FederationRelationship =
        "GetFederationRelationship", |_, r| self.get_federation_impl(r);
    update_federation_relationship(pb::UpdateFederationRelationshipRequest)
        -> pb::FederationRelationship =
        "UpdateFederationRelationship", |a, r| self.update_federation_impl(a, r);
    delete_federation_relationship(pb::FederationRelationshipRequest)
        -> pb::FederationRelationship =
        "DeleteFederationRelationship", |a, r| self.delete_federation_impl(a, r);
    refresh_federation_relationship(pb::FederationRelationshipRequest)
        -> pb::RefreshFederationRelationshipResponse =
        "RefreshFederationRelationship", |_, r| self.refresh_federation_impl(r);
    mint_x509_svid(pb::MintX509SvidRequest) -> pb::MintX509SvidResponse =
        "MintX509Svid", |a, r| self.mint_impl(a, r);
    mint_jwt_svid(pb::MintJwtSvidRequest) -> pb::MintJwtSvidResponse =
        "MintJwtSvid", |a, r| self.mint_jwt_impl(a, r);
    show_ca(pb::ShowCaRequest) -> pb::CaStatus =
        "ShowCa", |_, _| async { Ok(self.ca_status()) };
    prepare_ca(pb::PrepareCaRequest) -> pb::CaStatus =
        "PrepareCa", |a, _| self.ca_change(a, false);
    activate_ca(pb::ActivateCaRequest) -> pb::CaStatus =
        "ActivateCa", |a, _| self.ca_change(a, true);
    healthcheck(pb::HealthcheckRequest) -> pb::HealthcheckResponse =
        "Healthcheck", |_, _| self.healthcheck_impl();
    verify_audit_log(pb::VerifyAuditLogRequest) -> pb::VerifyAuditLogResponse =
        "VerifyAuditLog", |_, r| audit_rpc::verify(self.issuer.store.as_ref(), r);
    trace_delegation(pb::TraceDelegationRequest) -> pb::DelegationTrace =
        "TraceDelegation", |_, r| audit_rpc::trace(
            self.issuer.store.as_ref(),
            self.issuer.delegation.as_deref(),
            r,
        );
    list_audit_events(pb::ListAuditEventsRequest) -> pb::ListAuditEventsResponse =
        "ListAuditEvents", |_, r| audit_rpc::list(self.issuer.store.as_ref(), r);
    revoke_delegation(pb::RevokeDelegationRequest) -> pb::RevokeDelegationResponse =
        "RevokeDelegation", |a, r| async move { delegation_rpc::revoke(&self.issuer, &a, r).await };
    get_delegation_status(pb::GetDelegationStatusRequest) -> pb::DelegationStatus =
        "GetDelegationStatus", |_, _| async { Ok(delegation_rpc::status(self.issuer.delegation.as_ref())) };
}
