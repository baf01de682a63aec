//! The `signet-agent` binary: `run` starts the agent; `api fetch x509`, `api watch` and
//! `healthcheck` talk to a running agent over its Workload API socket.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use signet_agent::cli::{self, Cli, Command};
use signet_agent::config::Config;
use signet_agent::workload_api::attest::ProcessAttestation;
use zeroize::Zeroizing;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Completes on SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn run(config_path: &std::path::Path, join_token: Option<String>) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("signet-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = signet_agent::runtime::logging::init(&config.log_level, config.log_format) {
        eprintln!("signet-agent: {e}");
        return ExitCode::from(2);
    }
    let join_token = join_token.map(Zeroizing::new);
    let attestation = match ProcessAttestation::new(
        config.workload_attestors.unix.clone(),
        config.workload_attestors.cgroup.clone(),
    ) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("signet-agent: invalid config: workload_attestors: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match runtime() {
        Ok(rt) => rt.block_on(signet_agent::runtime::run(
            config,
            join_token,
            attestation,
            termination(),
        )),
        Err(e) => {
            eprintln!("signet-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "signet-agent stopped");
            eprintln!("signet-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> ExitCode {
    // One crypto backend, installed once: aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Cli::parse();
    let name = cli::command_name(&args.command);
    if let Command::Run { config, join_token } = &args.command {
        return run(config, join_token.clone());
    }
    let result = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cli::execute(args.command)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
