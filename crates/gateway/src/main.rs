//! The `sipline` command: reads the configuration, refuses unsafe set-ups, starts the
//! gateway and runs it until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sipline::config::Config;

#[derive(Parser)]
#[command(version, about = "WebRTC-to-SIP gateway and browser phone")]
struct Cli {
    /// TOML configuration file (see sipline.example.toml); without one, built-in defaults.
    #[arg(long, env = "SIPLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Allow serving a non-loopback address without any access token.
    #[arg(long)]
    insecure: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let settings = match config.and_then(|c| c.resolve(|k| std::env::var(k).ok())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sipline: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if !settings.http_listen.ip().is_loopback() && settings.tokens.is_empty() && !cli.insecure {
        eprintln!(
            "sipline: refusing to serve {} without access tokens: anyone who can reach it could \
             place calls on your PBX. Set http.tokens (or SIPLINE_HTTP_TOKENS), or pass --insecure.",
            settings.http_listen
        );
        return ExitCode::from(2);
    }
    if cli.check_config {
        println!("configuration OK: {} accounts", settings.accounts.len());
        return ExitCode::SUCCESS;
    }

    // 8 MiB stacks: the pure-Rust Opus codec keeps large frames on the stack
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sipline: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let hint = settings.pbx.as_ref().map(|p| {
            let first = settings
                .accounts
                .first()
                .map(|a| a.user.as_str())
                .unwrap_or("880");
            format!(
                "No PBX configured: the embedded one runs on {} (loopback only). Open http://{} in two \
                 browser tabs and call one tab's number from the other (the first tab is {first}), or call \
                 600 for an echo test, 601 for a test signal, 602 to hear your keys read back.{}",
                p.listen,
                settings.http_listen,
                if p.users.is_empty() {
                    String::new()
                } else {
                    " SIP phones can register there with the [pbx] users.".into()
                }
            )
        });
        let summary = format!(
            "SIP {} over {} as {}:{}, registrar {}, {} accounts",
            settings.sip_listen,
            settings.ua.transport,
            settings.ua.advertise_host,
            settings.ua.advertise_port,
            settings.ua.registrar_uri,
            settings.accounts.len()
        );
        let running = match sipline::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sipline: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("sipline serving http://{} ({summary})", running.http_addr);
        if let Some(hint) = hint {
            println!("{hint}");
        }
        match running.run_until_signal().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sipline: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
