//! `stunclient`: the NAT diagnosis people run first. Parses flags, resolves servers, opens the sockets the
//! engine asks for and runs one loop around `holepunch::nat::Diagnosis`; all test logic is in the library.
//! Exit codes are documented in docs/stunclient.md and in `--help`.

mod net;
mod output;
mod portmap;

use anyhow::anyhow;
use clap::Parser;
use holepunch::nat::{Config, FailReason, Retransmit};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// punchd's port: testing from it shows what punchd's mapping will look like.
pub const DEFAULT_LOCAL_PORT: u16 = 6666;

const AFTER_HELP: &str = "\
Exit codes:
  0  diagnosis finished (whatever the NAT type; read the verdict)
  1  runtime error (socket error, internal failure)
  2  usage error (bad flag, --local-port in use)
  3  a server name could not be resolved, or has no address of the chosen family
  4  no STUN server answered usably (unreachable, wrong port, or UDP blocked; or only error responses and
     unusable answers); a wrong port on a reachable host is reported at once (ICMP port unreachable),
     silence after the retransmission schedule

See docs/stunclient.md for every verdict and the JSON schema.";

/// Diagnose the NAT between this host and the Internet (RFC 5780 behaviour discovery).
#[derive(Parser, Debug)]
#[command(name = "stunclient", version, after_help = AFTER_HELP)]
pub struct Args {
    /// STUN server HOST[:PORT] (default port 3478); repeat for the multi-server mapping inference. The first
    /// server that supports RFC 5780 (OTHER-ADDRESS) carries the filtering and RFC 5780 mapping tests.
    #[arg(long = "server", short = 's', value_name = "HOST[:PORT]", required = true)]
    pub servers: Vec<String>,

    /// Local UDP port of the primary socket (0 = random). Default 6666, punchd's port; if that is busy it
    /// falls back to a random port with a warning, while an explicit busy port is an error.
    #[arg(long, value_name = "PORT")]
    pub local_port: Option<u16>,

    /// Print one JSON object (schema in docs/stunclient.md) instead of the human report.
    #[arg(long)]
    pub json: bool,

    /// Initial retransmission timeout RTO (RFC 8489 §6.2.1); doubles after each retransmission. It is the RTO
    /// of the first request to each server address and the ceiling of the RTO learned from its answers.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Floor of the RTO learned from measured round trips (RFC 8489 §6.2.1 / RFC 6298). The default leaves
    /// room for scheduling delays on busy hosts; set it to --timeout to use the fixed RFC 8489 schedule.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_min_rto)]
    pub min_rto: Duration,

    /// Requests sent per test before giving up (Rc, RFC 8489 §6.2.1); the last wait is --rm x RTO.
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub retries: u32,

    /// Multiple of RTO waited after the last request before a test counts as unanswered (Rm, RFC 8489
    /// §6.2.1).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub rm: u32,

    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Use IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Log every test step to stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// Measure how long an idle mapping lives (RFC 5780 §4.6; needs RESPONSE-PORT on the server; slow).
    #[arg(long)]
    pub lifetime: bool,

    /// Upper bound of the lifetime test (the test ends within about this time plus one request timeout).
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,

    /// Do not query the router's port mapping services (NAT-PMP, PCP, UPnP IGD).
    #[arg(long)]
    pub no_portmap: bool,

    /// Fresh sockets used to classify port allocation (0 skips the test).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(0..=32))]
    pub samples: u16,
}

/// An error with the exit code that tells scripts what kind it is.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: anyhow::Error) -> Self {
        Failure { code, error }
    }
}

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_RESOLVE: u8 = 3;
pub const EXIT_NO_ANSWER: u8 = 4;

fn main() -> ExitCode {
    let args = Args::parse();
    let level = if args.verbose { "debug" } else { "warn" };
    // Log lines (-v) can quote what servers and routers sent: escaped like every other human line.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            use std::io::Write as _;
            let msg = record.args().to_string();
            let ts = buf.timestamp_millis();
            writeln!(buf, "[{ts} {:<5} {}] {}", record.level(), record.target(), holepunch::text::escape_controls(&msg))
        })
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // The error can quote a server's reason phrase: one escaped line, whatever it contains.
            eprintln!("stunclient: {}", holepunch::text::escape_controls(&format!("{:#}", f.error)));
            ExitCode::from(f.code)
        }
    }
}

fn parse_min_rto(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
}

fn retransmit(args: &Args) -> Retransmit {
    Retransmit { rto: args.timeout, rc: args.retries, rm: args.rm, ..Retransmit::default() }
}

fn run(args: &Args) -> Result<(), Failure> {
    if args.lifetime && args.max_wait.is_zero() {
        return Err(Failure::new(EXIT_USAGE, anyhow!("--max-wait must be longer than zero")));
    }
    if args.timeout.is_zero() {
        return Err(Failure::new(EXIT_USAGE, anyhow!("--timeout must be longer than zero")));
    }
    let servers = net::resolve_all(&args.servers, args.ipv4, args.ipv6, retransmit(args).give_up_after())?;
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let mut cfg = Config::new(addrs, holepunch::io::os_seed().map_err(|e| Failure::new(EXIT_RUNTIME, e.into()))?);
    cfg.retransmit = retransmit(args);
    cfg.min_rto = args.min_rto;
    cfg.allocation_samples = usize::from(args.samples);
    cfg.lifetime = args.lifetime.then_some(args.max_wait);

    let sockets = net::open_sockets(&cfg, servers[0].addr, args.local_port)?;
    if !args.json && (args.verbose || std::io::stderr().is_terminal()) {
        output::print_start(&servers, &sockets, &cfg);
    }
    let report = net::run_diagnosis(cfg, sockets, args.verbose && !args.json)?;

    let portmap = if args.no_portmap {
        portmap::Outcome::Skipped("--no-portmap".into())
    } else if report.no_answer() {
        portmap::Outcome::Skipped("no STUN server answered".into())
    } else {
        portmap::check(report.local, report.public)
    };

    if args.json {
        println!("{}", output::json(&report, &servers, &portmap));
    } else if !report.no_answer() {
        output::print_human(&report, &portmap);
    }
    if report.no_answer() {
        // One line: what became of each server ("no answer from ... after N requests over T s", or
        // "nothing listens on ...: port unreachable (ICMP)").
        let why: Vec<String> = report
            .servers
            .iter()
            .map(|s| s.error.as_ref().map_or_else(|| format!("{}: no usable answer", s.addr), ToString::to_string))
            .collect();
        let silent = report.servers.iter().any(|s| s.error.as_ref().is_some_and(FailReason::is_no_answer));
        let hint = if silent { ": server down, wrong port, or UDP blocked" } else { "" };
        return Err(Failure::new(EXIT_NO_ANSWER, anyhow!("{}{hint}", why.join("; "))));
    }
    Ok(())
}
