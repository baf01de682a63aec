//! Execution of the admin commands.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use signet_issuer::entries::{self, EntryError};
use signet_proto::admin as pb;
use signet_proto::admin::admin_client::AdminClient;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::output::{
    self, AgentJson, AuditEventJson, BundleJson, CaJson, EntryJson, FederationJson, TraceJson,
    VerifyJson,
};
use super::{
    AgentCommand, AuditCommand, BundleCommand, BundleFormatArg, CaCommand, Command,
    DelegationCommand, EntryCommand, FederationCommand, JwtCommand, Output, TokenCommand,
    X509Command, client,
};

/// Page size used when the CLI lists every entry.
const LIST_PAGE_SIZE: u32 = 500;

fn status_error(e: tonic::Status) -> anyhow::Error {
    match e.code() {
        tonic::Code::Unavailable if e.message().is_empty() => {
            anyhow!("the issuer is unavailable")
        }
        _ => anyhow!("{}", e.message()),
    }
}

/// The message of an admin call's reply, or its status as a readable error.
trait Reply<T> {
    fn reply(self) -> Result<T>;
}

impl<T> Reply<T> for Result<tonic::Response<T>, tonic::Status> {
    fn reply(self) -> Result<T> {
        self.map(tonic::Response::into_inner).map_err(status_error)
    }
}

/// Checks selectors locally so that the error names the flag.
fn check_selectors(values: &[String]) -> Result<()> {
    for s in values {
        if let Err(e) = entries::parse_selector(s) {
            match e {
                EntryError::BadSelector { value, reason } => {
                    bail!("--selector {value:?}: {reason}")
                }
                other => bail!("--selector {s:?}: {other}"),
            }
        }
    }
    Ok(())
}

fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Runs an admin command (every command but `run`). Returns the process exit code.
pub async fn execute(socket: &Path, command: Command) -> Result<u8> {
    match command {
        Command::Run { .. } => bail!("`run` is not an admin command"),
        Command::Entry(c) => entry(socket, c).await.map(|()| 0),
        Command::Token(c) => token(socket, c).await.map(|()| 0),
        Command::Agent(c) => agent(socket, c).await.map(|()| 0),
        Command::Bundle(c) => bundle(socket, c).await.map(|()| 0),
        Command::Federation(c) => federation(socket, c).await,
        Command::X509(c) => x509(socket, c).await.map(|()| 0),
        Command::Jwt(c) => jwt(socket, c).await.map(|()| 0),
        Command::Ca(c) => ca(socket, c).await.map(|()| 0),
        Command::Healthcheck => healthcheck(socket).await,
        Command::Audit(c) => audit(socket, c).await,
        Command::Delegation(c) => delegation(socket, c).await.map(|()| 0),
    }
}

/// Prints a record as JSON (its `J` form) or as `text` makes it.
fn print_one<'a, R, J>(record: &'a R, output: Output, text: fn(&R) -> String) -> Result<()>
where
    J: Serialize + From<&'a R>,
{
    match output {
        Output::Json => print(&output::json(&J::from(record))?),
        Output::Text => print(&text(record)),
    }
}

/// Prints records as a JSON array (of their `J` forms) or as `text` makes them.
fn print_all<'a, R, J>(records: &'a [R], output: Output, text: fn(&[R]) -> String) -> Result<()>
where
    J: Serialize + From<&'a R>,
{
    match output {
        Output::Json => print(&output::json(
            &records.iter().map(J::from).collect::<Vec<_>>(),
        )?),
        Output::Text => print(&text(records)),
    }
}

async fn entry(socket: &Path, c: EntryCommand) -> Result<()> {
    match c {
        EntryCommand::Create(a) => {
            check_selectors(&a.selectors)?;
            let mut client = client::connect(socket).await?;
            let e = client
                .create_entry(pb::CreateEntryRequest {
                    spiffe_id: a.spiffe_id,
                    parent_id: a.parent_id,
                    selectors: a.selectors,
                    x509_svid_ttl: a.x509_svid_ttl.unwrap_or(0),
                    jwt_svid_ttl: a.jwt_svid_ttl.unwrap_or(0),
                    dns_names: a.dns_names,
                    hint: a.hint.unwrap_or_default(),
                    admin: a.admin,
                    downstream: a.downstream,
                    federates_with: a.federates_with,
                    expires_at: a.expires_at,
                })
                .await
                .reply()?;
            print_one::<_, EntryJson>(&e, a.output.output, output::entry_text)
        }
        EntryCommand::Show(a) => {
            check_selectors(&a.selectors)?;
            let mut client = client::connect(socket).await?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let resp = client
                    .list_entries(pb::ListEntriesRequest {
                        id: a.id.clone().unwrap_or_default(),
                        spiffe_id: a.spiffe_id.clone().unwrap_or_default(),
                        parent_id: a.parent_id.clone().unwrap_or_default(),
                        selectors: a.selectors.clone(),
                        page_size: LIST_PAGE_SIZE,
                        page_token: page_token.clone(),
                    })
                    .await
                    .reply()?;
                all.extend(resp.entries);
                if resp.next_page_token.is_empty() {
                    break;
                }
                page_token = resp.next_page_token;
            }
            print_all::<_, EntryJson>(&all, a.output.output, output::entries_text)
        }
        EntryCommand::Update(a) => {
            check_selectors(&a.selectors)?;
            let list = |v: Vec<String>, clear: bool| {
                (clear || !v.is_empty()).then_some(pb::StringList { values: v })
            };
            let mut client = client::connect(socket).await?;
            let e = client
                .update_entry(pb::UpdateEntryRequest {
                    id: a.id,
                    spiffe_id: a.spiffe_id,
                    parent_id: a.parent_id,
                    selectors: list(a.selectors, false),
                    x509_svid_ttl: a.x509_svid_ttl,
                    jwt_svid_ttl: a.jwt_svid_ttl,
                    dns_names: list(a.dns_names, a.clear_dns_names),
                    hint: a.hint,
                    admin: a.admin,
                    downstream: a.downstream,
                    federates_with: list(a.federates_with, a.clear_federates_with),
                    expires_at: a.expires_at,
                })
                .await
                .reply()?;
            print_one::<_, EntryJson>(&e, a.output.output, output::entry_text)
        }
        EntryCommand::Delete { id, output } => {
            let mut client = client::connect(socket).await?;
            let e = client
                .delete_entry(pb::DeleteEntryRequest { id })
                .await
                .reply()?;
            match output.output {
                Output::Json => print(&output::json(&EntryJson::from(&e))?),
                Output::Text => print(&format!("Deleted entry {}\n", e.id)),
            }
        }
    }
}

async fn token(socket: &Path, c: TokenCommand) -> Result<()> {
    let TokenCommand::Generate {
        spiffe_id,
        ttl,
        output,
    } = c;
    let mut client = client::connect(socket).await?;
    let resp = client
        .generate_join_token(pb::GenerateJoinTokenRequest {
            ttl: ttl.unwrap_or(0),
            alias_spiffe_id: spiffe_id.unwrap_or_default(),
        })
        .await
        .reply()?;
    let token = Zeroizing::new(resp.token);
    match output.output {
        Output::Json => {
            let v = Zeroizing::new(output::json(&serde_json::json!({
                "token": token.as_str(),
                "expires_at": resp.expires_at,
                "agent_spiffe_id": resp.agent_spiffe_id,
                "alias_spiffe_id": (!resp.alias_spiffe_id.is_empty()).then_some(&resp.alias_spiffe_id),
            }))?);
            print(&v)
        }
        Output::Text => print(&Zeroizing::new(format!("Token: {}\n", token.as_str()))),
    }
}

async fn agent(socket: &Path, c: AgentCommand) -> Result<()> {
    let mut client = client::connect(socket).await?;
    match c {
        AgentCommand::List(o) => {
            let agents = client
                .list_agents(pb::ListAgentsRequest {})
                .await
                .reply()?
                .agents;
            print_all::<_, AgentJson>(&agents, o.output, output::agents_text)
        }
        AgentCommand::Show { spiffe_id, output } => {
            let a = client
                .get_agent(pb::AgentRequest { spiffe_id })
                .await
                .reply()?;
            print_one::<_, AgentJson>(&a, output.output, output::agent_text)
        }
        AgentCommand::Evict { spiffe_id } => {
            let a = client
                .evict_agent(pb::AgentRequest { spiffe_id })
                .await
                .reply()?;
            print(&format!("Evicted agent {}\n", a.spiffe_id))
        }
        AgentCommand::Ban { spiffe_id } => set_banned(&mut client, spiffe_id, true).await,
        AgentCommand::Unban { spiffe_id } => set_banned(&mut client, spiffe_id, false).await,
    }
}

async fn set_banned(
    client: &mut AdminClient<Channel>,
    spiffe_id: String,
    banned: bool,
) -> Result<()> {
    let a = client
        .ban_agent(pb::BanAgentRequest { spiffe_id, banned })
        .await
        .reply()?;
    let done = if banned { "Banned" } else { "Unbanned" };
    print(&format!("{done} agent {}\n", a.spiffe_id))
}

fn format_pb(f: BundleFormatArg) -> pb::BundleFormat {
    match f {
        BundleFormatArg::Pem => pb::BundleFormat::Pem,
        BundleFormatArg::Spiffe => pb::BundleFormat::Spiffe,
    }
}

async fn bundle(socket: &Path, c: BundleCommand) -> Result<()> {
    match c {
        BundleCommand::Show {
            format,
            trust_domain,
        } => {
            let mut client = client::connect(socket).await?;
            let doc = client
                .get_bundle(pb::GetBundleRequest {
                    trust_domain: trust_domain.unwrap_or_default(),
                    format: format_pb(format) as i32,
                })
                .await
                .reply()?;
            print(&doc.content)
        }
        BundleCommand::Set {
            trust_domain,
            path,
            format,
        } => {
            let content = match &path {
                Some(p) => std::fs::read(p).with_context(|| format!("--path {}", p.display()))?,
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("cannot read the bundle from standard input")?;
                    buf
                }
            };
            let mut client = client::connect(socket).await?;
            let info = client
                .set_federated_bundle(pb::SetFederatedBundleRequest {
                    trust_domain,
                    format: format_pb(format) as i32,
                    content,
                })
                .await
                .reply()?;
            print(&format!(
                "Bundle of {} set (sequence {}, {} X.509, {} JWT and {} WIT authorities)\n",
                info.trust_domain,
                info.sequence,
                info.x509_authorities,
                info.jwt_authorities,
                info.wit_authorities
            ))
        }
        BundleCommand::List(o) => {
            let mut client = client::connect(socket).await?;
            let bundles = client
                .list_bundles(pb::ListBundlesRequest {})
                .await
                .reply()?
                .bundles;
            print_all::<_, BundleJson>(&bundles, o.output, output::bundles_text)
        }
        BundleCommand::Delete { trust_domain } => {
            let mut client = client::connect(socket).await?;
            let info = client
                .delete_federated_bundle(pb::DeleteFederatedBundleRequest { trust_domain })
                .await
                .reply()?;
            print(&format!("Deleted the bundle of {}\n", info.trust_domain))
        }
    }
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
}

fn bootstrap(
    flag_path: Option<&Path>,
    format: BundleFormatArg,
) -> Result<Option<pb::BootstrapBundle>> {
    flag_path
        .map(|p| {
            Ok(pb::BootstrapBundle {
                format: format_pb(format) as i32,
                content: read_file("--bundle", p)?,
            })
        })
        .transpose()
}

fn ca_bundle(path: Option<&Path>) -> Result<Option<String>> {
    path.map(|p| {
        String::from_utf8(read_file("--ca-bundle", p)?)
            .map_err(|_| anyhow!("--ca-bundle {}: not a PEM text file", p.display()))
    })
    .transpose()
}

fn print_relationship(r: &pb::FederationRelationship, output: Output) -> Result<()> {
    print_one::<_, FederationJson>(r, output, output::relationship_text)
}

async fn federation(socket: &Path, c: FederationCommand) -> Result<u8> {
    let mut client = client::connect(socket).await?;
    match c {
        FederationCommand::Create(a) => {
            let r = client
                .create_federation_relationship(pb::CreateFederationRelationshipRequest {
                    trust_domain: a.trust_domain,
                    bundle_endpoint_url: a.bundle_endpoint_url,
                    profile: a.profile.name().to_owned(),
                    endpoint_spiffe_id: a.endpoint_spiffe_id.unwrap_or_default(),
                    ca_bundle_pem: ca_bundle(a.ca_bundle.as_deref())?.unwrap_or_default(),
                    bundle: bootstrap(a.bundle.as_deref(), a.bundle_format)?,
                })
                .await
                .reply()?;
            print_relationship(&r, a.output.output)?;
        }
        FederationCommand::List(o) => {
            let list = client
                .list_federation_relationships(pb::ListFederationRelationshipsRequest {})
                .await
                .reply()?
                .relationships;
            print_all::<_, FederationJson>(&list, o.output, output::relationships_text)?;
        }
        FederationCommand::Show {
            trust_domain,
            output,
        } => {
            let r = client
                .get_federation_relationship(pb::FederationRelationshipRequest { trust_domain })
                .await
                .reply()?;
            print_relationship(&r, output.output)?;
        }
        FederationCommand::Update(a) => {
            let ca_bundle_pem = if a.system_roots {
                Some(String::new())
            } else {
                ca_bundle(a.ca_bundle.as_deref())?
            };
            let r = client
                .update_federation_relationship(pb::UpdateFederationRelationshipRequest {
                    trust_domain: a.trust_domain,
                    bundle_endpoint_url: a.bundle_endpoint_url,
                    profile: a.profile.map(|p| p.name().to_owned()),
                    endpoint_spiffe_id: a.endpoint_spiffe_id,
                    ca_bundle_pem,
                    bundle: bootstrap(a.bundle.as_deref(), a.bundle_format)?,
                })
                .await
                .reply()?;
            print_relationship(&r, a.output.output)?;
        }
        FederationCommand::Delete { trust_domain } => {
            let r = client
                .delete_federation_relationship(pb::FederationRelationshipRequest { trust_domain })
                .await
                .reply()?;
            print(&format!(
                "Deleted the federation relationship with {} (its bundle is kept; `bundle delete` removes it)\n",
                r.trust_domain
            ))?;
        }
        FederationCommand::Refresh {
            trust_domain,
            output,
        } => {
            let resp = client
                .refresh_federation_relationship(pb::FederationRelationshipRequest {
                    trust_domain: trust_domain.clone(),
                })
                .await
                .map_err(|e| {
                    anyhow!(
                        "{}",
                        match e.code() {
                            tonic::Code::Unavailable if !e.message().is_empty() => format!(
                                "bundle of {trust_domain} not refreshed (the last good bundle is kept): {}",
                                e.message()
                            ),
                            _ => status_error(e).to_string(),
                        }
                    )
                })?
                .into_inner();
            match output.output {
                Output::Json => print(&output::json(&serde_json::json!({
                    "updated": resp.updated,
                    "sequence": resp.sequence,
                    "relationship": resp.relationship.as_ref().map(FederationJson::from),
                }))?)?,
                Output::Text => print(&format!(
                    "Bundle of {trust_domain} {} (sequence {})\n",
                    if resp.updated { "updated" } else { "unchanged" },
                    resp.sequence
                ))?,
            }
        }
    }
    Ok(0)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The mode above applies only to new files: enforce it on existing ones too.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn x509(socket: &Path, c: X509Command) -> Result<()> {
    let X509Command::Mint {
        spiffe_id,
        ttl,
        dns_names,
        write,
    } = c;
    let mut client = client::connect(socket).await?;
    let resp = client
        .mint_x509_svid(pb::MintX509SvidRequest {
            spiffe_id,
            ttl: ttl.unwrap_or(0),
            dns_names,
        })
        .await
        .reply()?;
    let key = Zeroizing::new(resp.private_key_pem);
    match write {
        Some(dir) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("--write {}: cannot create directory", dir.display()))?;
            let svid = dir.join("svid.pem");
            let key_path = dir.join("svid.key");
            let bundle = dir.join("bundle.pem");
            write_file(&key_path, key.as_bytes(), 0o600)?;
            write_file(&svid, resp.cert_chain_pem.as_bytes(), 0o644)?;
            write_file(&bundle, resp.bundle_pem.as_bytes(), 0o644)?;
            print(&format!(
                "X509-SVID for {} (serial {}, expires {})\nWrote {}\nWrote {}\nWrote {}\n",
                resp.spiffe_id,
                resp.serial,
                output::time(resp.expires_at),
                svid.display(),
                key_path.display(),
                bundle.display()
            ))
        }
        None => {
            let out = Zeroizing::new(format!(
                "{}{}{}",
                resp.cert_chain_pem,
                key.as_str(),
                resp.bundle_pem
            ));
            print(&out)
        }
    }
}

async fn jwt(socket: &Path, c: JwtCommand) -> Result<()> {
    let JwtCommand::Mint(a) = c;
    let mut client = client::connect(socket).await?;
    let resp = client
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            spiffe_id: a.spiffe_id,
            audience: a.audience,
            ttl_seconds: a.ttl.unwrap_or(0),
        })
        .await
        .reply()?;
    let token = Zeroizing::new(resp.token);
    match a.output.output {
        Output::Json => {
            let v = Zeroizing::new(output::json(&serde_json::json!({
                "token": token.as_str(),
                "spiffe_id": resp.spiffe_id,
                "audience": resp.audience,
                "expires_at": resp.expires_at,
                "issued_at": resp.issued_at,
                "key_id": resp.key_id,
                "jti": resp.jti,
            }))?);
            print(&v)
        }
        // The token alone, so that `TOKEN=$(signet-issuer jwt mint ...)` works.
        Output::Text => print(&Zeroizing::new(format!("{}\n", token.as_str()))),
    }
}

async fn ca(socket: &Path, c: CaCommand) -> Result<()> {
    let mut client = client::connect(socket).await?;
    let (status, o) = match c {
        CaCommand::Show(o) => (client.show_ca(pb::ShowCaRequest {}).await, o),
        CaCommand::Prepare(o) => (client.prepare_ca(pb::PrepareCaRequest {}).await, o),
        CaCommand::Activate(o) => (client.activate_ca(pb::ActivateCaRequest {}).await, o),
    };
    print_one::<_, CaJson>(&status.reply()?, o.output, output::ca_text)
}

async fn healthcheck(socket: &Path) -> Result<u8> {
    let mut client = client::connect(socket).await?;
    let h = client
        .healthcheck(pb::HealthcheckRequest {})
        .await
        .reply()?;
    if h.healthy {
        print(&format!(
            "Issuer is healthy (trust domain {}, version {})\n",
            h.trust_domain, h.version
        ))?;
        Ok(0)
    } else {
        let mut problems = Vec::new();
        if !h.store_ok {
            problems.push(format!("datastore unreachable: {}", h.detail));
        }
        if !h.ca_active {
            problems.push("no active CA".to_owned());
        }
        if !h.node_api_bound {
            problems.push("node API not listening".to_owned());
        }
        eprintln!("Issuer is unhealthy: {}", problems.join("; "));
        Ok(1)
    }
}

/// Page size of `audit list`.
const AUDIT_PAGE_SIZE: u64 = 1000;

async fn delegation(socket: &Path, c: DelegationCommand) -> Result<()> {
    let mut client = client::connect(socket).await?;
    match c {
        DelegationCommand::Revoke {
            token_id,
            reason,
            output,
        } => {
            let r = client
                .revoke_delegation(pb::RevokeDelegationRequest { token_id, reason })
                .await
                .reply()?;
            match output.output {
                Output::Json => print(&output::json(&serde_json::json!({
                    "token_id": r.token_id,
                    "revocation_id": r.revocation_id,
                    "revoked_token_ids": r.revoked_token_ids,
                    "newly_revoked": r.newly_revoked,
                    "sequence": r.sequence,
                }))?),
                Output::Text => print(&format!(
                    "{} token {} (revocation id {}); {} known token(s) carry it: {}\n",
                    if r.newly_revoked {
                        "Revoked"
                    } else {
                        "Already revoked:"
                    },
                    r.token_id,
                    r.revocation_id,
                    r.revoked_token_ids.len(),
                    r.revoked_token_ids.join(", ")
                )),
            }
        }
        DelegationCommand::Status { output } => {
            let s = client
                .get_delegation_status(pb::GetDelegationStatusRequest {})
                .await
                .reply()?;
            match output.output {
                Output::Json => {
                    let keys: serde_json::Value =
                        serde_json::from_str(&s.keys_json).unwrap_or_default();
                    let revocations: serde_json::Value =
                        serde_json::from_str(&s.revocations_json).unwrap_or_default();
                    print(&output::json(&serde_json::json!({
                        "enabled": s.enabled,
                        "keys": keys,
                        "revocations": revocations,
                        "policy_files": s.policy_files,
                        "sequence": s.sequence,
                    }))?)
                }
                Output::Text if !s.enabled => {
                    print("Delegation: off ([delegation] policies_dir is not set)\n")
                }
                Output::Text => {
                    let mut out = format!("Delegation: on (sequence {})\nKeys:\n", s.sequence);
                    for k in &s.keys {
                        out.push_str(&format!(
                            "  root_key_id {:<4} {:<9} {:<8} not after {}  {}\n",
                            k.root_key_id,
                            k.algorithm,
                            k.state,
                            output::time(k.not_after),
                            k.public_key
                        ));
                    }
                    out.push_str(&format!("Revoked blocks: {}\nPolicy files:\n", s.revoked));
                    for f in &s.policy_files {
                        out.push_str(&format!("  {f}\n"));
                    }
                    print(&out)
                }
            }
        }
    }
}

async fn audit(socket: &Path, c: AuditCommand) -> Result<u8> {
    let mut client = client::connect(socket).await?;
    match c {
        AuditCommand::Verify {
            expect_head,
            output,
        } => {
            let r = client
                .verify_audit_log(pb::VerifyAuditLogRequest {
                    expect_head_seq: expect_head.as_ref().map(|a| a.seq),
                    expect_head_hash: expect_head.and_then(|a| a.hash).unwrap_or_default(),
                })
                .await
                .reply()?;
            print_one::<_, VerifyJson>(&r, output.output, output::verify_text)?;
            if r.ok {
                Ok(0)
            } else {
                eprintln!("audit verify: {}", r.summary);
                Ok(1)
            }
        }
        AuditCommand::Trace {
            token_id,
            token,
            output,
        } => {
            let token = match token.as_deref() {
                Some("-") => {
                    let mut s = Zeroizing::new(String::new());
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .map_err(|e| anyhow!("cannot read the token from stdin: {e}"))?;
                    Zeroizing::new(s.trim().to_owned())
                }
                Some(t) => Zeroizing::new(t.to_owned()),
                None => Zeroizing::new(String::new()),
            };
            let t = client
                .trace_delegation(pb::TraceDelegationRequest {
                    token_id: token_id.unwrap_or_default(),
                    token: token.to_string(),
                })
                .await
                .reply()?;
            print_one::<_, TraceJson>(&t, output.output, output::trace_text)?;
            Ok(0)
        }
        AuditCommand::List {
            kind,
            after,
            limit,
            output,
        } => {
            let mut events = Vec::new();
            let mut after = i64::try_from(after).map_err(|_| anyhow!("--after: too large"))?;
            loop {
                let want = if limit == 0 {
                    AUDIT_PAGE_SIZE
                } else {
                    (limit - events.len() as u64).min(AUDIT_PAGE_SIZE)
                };
                let resp = client
                    .list_audit_events(pb::ListAuditEventsRequest {
                        after,
                        limit: u32::try_from(want).unwrap_or(u32::MAX),
                        kind: kind.clone().unwrap_or_default(),
                    })
                    .await
                    .reply()?;
                if let Some(last) = resp.events.last() {
                    after = last.seq;
                }
                events.extend(resp.events);
                if !resp.more || (limit != 0 && events.len() as u64 >= limit) {
                    break;
                }
            }
            print_all::<_, AuditEventJson>(&events, output.output, output::audit_events_text)?;
            Ok(0)
        }
    }
}
