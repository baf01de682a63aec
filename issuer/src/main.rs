//! The `signet-issuer` binary: `run` starts the issuer; every other command is an admin command
//! sent to a running issuer over its admin socket.

mod cli;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn command_name(c: &cli::Command) -> &'static str {
    use cli::{
        AgentCommand as A, BundleCommand as B, CaCommand as C, Command, EntryCommand as E,
        FederationCommand as F,
    };
    match c {
        Command::Run { .. } => "run",
        Command::Entry(E::Create(_)) => "entry create",
        Command::Entry(E::Show(_)) => "entry show",
        Command::Entry(E::Update(_)) => "entry update",
        Command::Entry(E::Delete { .. }) => "entry delete",
        Command::Token(_) => "token generate",
        Command::Agent(A::List(_)) => "agent list",
        Command::Agent(A::Show { .. }) => "agent show",
        Command::Agent(A::Evict { .. }) => "agent evict",
        Command::Agent(A::Ban { .. }) => "agent ban",
        Command::Agent(A::Unban { .. }) => "agent unban",
        Command::Bundle(B::Show { .. }) => "bundle show",
        Command::Bundle(B::Set { .. }) => "bundle set",
        Command::Bundle(B::List(_)) => "bundle list",
        Command::Bundle(B::Delete { .. }) => "bundle delete",
        Command::Federation(F::Create(_)) => "federation create",
        Command::Federation(F::List(_)) => "federation list",
        Command::Federation(F::Show { .. }) => "federation show",
        Command::Federation(F::Update(_)) => "federation update",
        Command::Federation(F::Delete { .. }) => "federation delete",
        Command::Federation(F::Refresh { .. }) => "federation refresh",
        Command::X509(_) => "x509 mint",
        Command::Jwt(_) => "jwt mint",
        Command::Delegation(cli::DelegationCommand::Revoke { .. }) => "delegation revoke",
        Command::Delegation(cli::DelegationCommand::Status { .. }) => "delegation status",
        Command::Ca(C::Show(_)) => "ca show",
        Command::Ca(C::Prepare(_)) => "ca prepare",
        Command::Ca(C::Activate(_)) => "ca activate",
        Command::Healthcheck => "healthcheck",
        Command::Audit(cli::AuditCommand::Verify { .. }) => "audit verify",
        Command::Audit(cli::AuditCommand::Trace { .. }) => "audit trace",
        Command::Audit(cli::AuditCommand::List { .. }) => "audit list",
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let name = command_name(&args.command);
    if let cli::Command::Run { config } = &args.command {
        let config = match signet_issuer::config::Config::load(config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("signet-issuer: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = signet_issuer::logging::init(&config.log_level, config.log_format) {
            eprintln!("signet-issuer: {e}");
            return ExitCode::from(2);
        }
        let json_logs = config.log_format == signet_issuer::config::LogFormat::Json;
        let result = runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run::run(config)));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // JSON logs get the error as a record too; a plain line follows in both formats.
                if json_logs {
                    tracing::error!(error = format!("{e:#}"), "signet-issuer stopped");
                }
                eprintln!("signet-issuer: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cli::execute(&args.socket_path, args.command)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
