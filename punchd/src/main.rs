//! punchd: the peer daemon. It owns the one punching socket (fixed port, never closed while it runs), learns
//! its public endpoint from stund and keeps the NAT mapping alive; with `--peer-id` it also carries the peer's
//! identity (an X25519 key, the configured peers) and serves a control socket for `punchd status`.
//! Rendezvous and punching join the same loop. Flags, output and exit codes: docs/punchd.md and `--help`.
//!
//! - `config`: flags and the TOML file merged into checked settings.
//! - `daemon`: the socket, the loop, the status snapshot.
//! - `control`: the control socket (server thread, client, default path) and its line protocol.
//! - `controlled`: an engine under the control socket: commands in, status snapshot out.
//! - `status`: the status schema the control socket serves.
//! - `keys`: `genkey` and `pubkey`.

mod birthday;
mod config;
#[cfg(windows)]
mod console;
mod control;
mod controlled;
mod daemon;
mod diagnose;
mod exit;
mod keys;
mod node;
mod portmap;
mod status;
mod tunnel;

use clap::{Args, Parser, Subcommand};
use config::{DaemonArgs, Settings};
use exit::{EXIT_OK, EXIT_RUNTIME, EXIT_USAGE};
use holepunch::io::KeyFileError;
use holepunch::text::escape_controls;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Examples:
  punchd --server stun.example.net:3478
  punchd --server 203.0.113.10 --port 7000 --keepalive 5s --json
  punchd --server 203.0.113.10 --once        # print the public endpoint and exit
  punchd genkey > alice.key                  # a new secret key, file mode 0600
  punchd pubkey < alice.key                  # its public key, to give to the other peers
  punchd --peer-id alice --server stun.example.net --secret-file net.secret --key alice.key \\
         --peer bob=PUBKEY --connect bob
  punchd status --peer-id alice [--json]

Exit codes:
  0  --once: the public endpoint was learned and printed; without --once: stopped by SIGINT/SIGTERM;
     genkey, pubkey, status: done
  1  runtime error (cannot resolve the server, cannot bind the port, socket failure, control socket in use
     or unreachable, key or secret file missing, malformed or readable by others, malformed key on stdin)
  2  --once: the server did not answer (silence for the whole retransmission schedule, or ICMP port
     unreachable)
  3  --once: the server answered, but without a usable public endpoint (an error response, no mapped address,
     an unusable one such as 0.0.0.0:0 or a broadcast address, or unknown comprehension-required attributes)
  4  usage error (bad flag or value, e.g. --rto 0s; bad config file; unknown or duplicate peer)

--once ends within one transaction's give-up time, --rto x (2^(retries-1) - 1 + 16): 39.5 s with the defaults.
See docs/punchd.md for the output lines, the JSON events and the control socket's schema.";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "holepunch peer daemon: keeps one UDP socket's public endpoint known and its NAT mapping alive",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a new secret key (base64, as `wg genkey`); `punchd genkey > alice.key` makes the file mode 0600.
    Genkey,
    /// Read a secret key on standard input and print its public key (as `wg pubkey`).
    Pubkey,
    /// Show a running daemon's peers and paths, through its control socket.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The daemon's peer id (finds its default control socket).
    #[arg(long, value_name = "NAME")]
    peer_id: Option<String>,
    /// The daemon's control socket (Windows: pipe name; overrides --peer-id).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// The daemon's config file (its `peer_id` and `control`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The status as one JSON object (schema: docs/punchd.md).
    #[arg(long)]
    json: bool,
}

/// How long `punchd status` waits for the daemon.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An error with the exit code it ends the process with.
struct Failure(i32, anyhow::Error);

fn usage(e: anyhow::Error) -> Failure {
    Failure(EXIT_USAGE, e)
}

fn runtime(e: anyhow::Error) -> Failure {
    Failure(EXIT_RUNTIME, e)
}

fn status(args: StatusArgs) -> Result<i32, Failure> {
    use config::FileConfig;
    use holepunch::signal::PeerName;
    let file = match &args.config {
        Some(p) => FileConfig::load(p).map_err(usage)?,
        None => FileConfig::default(),
    };
    let path = match (args.control.or(file.control), args.peer_id.or(file.peer_id)) {
        (Some(path), _) => path,
        (None, Some(id)) => {
            let name = PeerName::new(&id).map_err(|e| usage(anyhow::anyhow!("--peer-id {id:?}: {e}")))?;
            control::path::default_path(&name)
        }
        (None, None) => return Err(usage(anyhow::anyhow!("status needs --peer-id NAME or --control PATH"))),
    };
    let response = control::request(&path, &control::Request::Status, STATUS_TIMEOUT).map_err(runtime)?;
    let Some(status) = response.status.filter(|_| response.ok) else {
        let why = response.error.unwrap_or_else(|| "no status in the answer".into());
        return Err(runtime(anyhow::anyhow!("the daemon answered: {}", escape_controls(&why))));
    };
    // A reader that stops early (`| head`) is not an error: write errors are ignored, not a panic.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", serde_json::to_string(&status).map_err(|e| runtime(e.into()))?);
    } else {
        for line in status.render().lines() {
            let _ = writeln!(out, "{}", escape_controls(line));
        }
    }
    Ok(EXIT_OK)
}

fn daemon(args: DaemonArgs) -> Result<i32, Failure> {
    let settings = Settings::from_args(args).map_err(|e| {
        // A key or secret file is found wanting when it is read: a runtime error like a busy port. The rest
        // is what the user typed.
        if e.downcast_ref::<KeyFileError>().is_some() {
            runtime(e)
        } else {
            usage(e)
        }
    })?;
    daemon::run(settings).map_err(runtime)
}

fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Some(Cmd::Genkey) => keys::genkey().map(|()| EXIT_OK).map_err(runtime),
        Some(Cmd::Pubkey) => keys::pubkey().map(|()| EXIT_OK).map_err(runtime),
        Some(Cmd::Status(args)) => status(args),
        None => daemon(cli.daemon),
    }
}

/// Parse the flags; a usage error is one line on stderr and exit 4 (clap's own exit code 2 would read as
/// "no answer" to a script using --once).
fn parse_args() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // clap's message up to its first blank line (what is wrong, and e.g. which flags are missing),
            // without the usage block and the "try --help" tail.
            let text = e.to_string();
            let what: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let what = what.join(" ");
            eprintln!("punchd: {}", what.strip_prefix("error: ").unwrap_or(&what));
            std::process::exit(EXIT_USAGE);
        }
    }
}

fn main() {
    // Log lines can quote what the server sent: escaped like every other human line.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            use std::io::Write as _;
            let msg = record.args().to_string();
            let ts = buf.timestamp();
            writeln!(buf, "[{ts} {:<5} {}] {}", record.level(), record.target(), escape_controls(&msg))
        })
        .init();
    let cli = parse_args();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(Failure(code, e)) => {
            eprintln!("punchd: {}", escape_controls(&format!("{e:#}")));
            std::process::exit(code);
        }
    }
}
