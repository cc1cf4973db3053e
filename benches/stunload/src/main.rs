//! stunload: a loopback-only STUN Binding load generator, and the batched UDP echo loop that is its ceiling.
//! See docs/performance.md for how scripts/bench.sh uses it.

mod echo;
mod hist;
mod load;
mod sys;
mod wire;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

const LONG_ABOUT: &str = "\
Loopback-only STUN Binding load generator.

Keeps --inflight RFC 5389 Binding requests in flight on each of --sockets UDP sockets, batched with
recvmmsg/sendmmsg, and reports answered requests per second and p50/p99/p99.9 latency. Requests that
see no answer within --timeout are counted and re-sent with a new transaction id. Only targets in
127.0.0.0/8 or ::1 are accepted.

Examples:
  stunload --target 127.0.0.1:3478 --sockets 4 --inflight 32 --warmup 2 --duration 10
  stunload --target 127.0.0.1:3478 --check --json
  stunload echo --bind 127.0.0.1:9999 &
  stunload --target 127.0.0.1:9999 --accept-echo";

#[derive(Parser)]
#[command(name = "stunload", version, about = "Loopback-only STUN Binding load generator", long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bare batched UDP echo loop (the rig's ceiling) until SIGINT/SIGTERM or --max-time.
    Echo(EchoArgs),
}

#[derive(Args)]
struct LoadArgs {
    /// Server to load (loopback only), e.g. 127.0.0.1:3478.
    #[arg(long, short)]
    target: Option<SocketAddr>,
    /// UDP sockets (client ports), each with its own window of requests.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    sockets: u16,
    /// Requests kept in flight per socket.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    inflight: u16,
    /// Load threads; sockets are shared among them round-robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Datagrams per recvmmsg/sendmmsg call.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,
    /// Seconds of load before measuring starts (answers in this phase are not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Also stop once this many answers were measured.
    #[arg(long)]
    count: Option<u64>,
    /// Milliseconds without an answer after which a request counts as lost and is re-sent.
    #[arg(long, default_value_t = 200)]
    timeout: u64,
    /// Decode XOR-MAPPED-ADDRESS in every answer and require it to equal the socket's own address.
    #[arg(long)]
    check: bool,
    /// Count our request echoed back unchanged as an answer (for the echo loop).
    #[arg(long)]
    accept_echo: bool,
    /// Sleep in poll(2) when nothing has arrived instead of busy-polling the sockets (gentler on a shared
    /// core, but wake-up latency then limits the load).
    #[arg(long)]
    block: bool,
    /// Print one JSON object instead of the human line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EchoArgs {
    /// Address to listen on (loopback only); port 0 picks a free port and prints it.
    #[arg(long)]
    bind: SocketAddr,
    /// Threads, each with its own SO_REUSEPORT socket on the same port.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Datagrams per recvmmsg/sendmmsg call.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,
    /// Exit on its own after this many seconds, in case whoever started it never stops it.
    #[arg(long, default_value_t = 3600)]
    max_time: u64,
}

fn seconds(name: &str, v: f64, max: f64) -> Result<Duration> {
    if !v.is_finite() || !(0.0..=max).contains(&v) {
        bail!("--{name} must be between 0 and {max} seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn run_load(a: &LoadArgs) -> Result<()> {
    let Some(target) = a.target else {
        bail!("missing --target ADDR (or use `stunload echo --bind ADDR`); see --help");
    };
    sys::require_loopback(target, "target")?;
    let duration = seconds("duration", a.duration, 3600.0)?;
    if duration.is_zero() {
        bail!("--duration must be greater than 0");
    }
    if a.timeout == 0 || a.timeout > 60_000 {
        bail!("--timeout must be between 1 and 60000 ms, got {}", a.timeout);
    }
    let cfg = load::LoadConfig {
        target,
        sockets: usize::from(a.sockets),
        inflight: usize::from(a.inflight),
        // More threads than sockets would leave threads with nothing to do.
        threads: usize::from(a.threads.min(a.sockets)),
        batch: usize::from(a.batch),
        warmup: seconds("warmup", a.warmup, 600.0)?,
        duration,
        count: a.count,
        timeout: Duration::from_millis(a.timeout),
        check: a.check,
        accept_echo: a.accept_echo,
        block: a.block,
    };
    let r = load::run(&cfg)?;
    let c = &r.counters;
    let h = &r.hist;
    if a.json {
        println!(
            "{{\"target\":\"{}\",\"sockets\":{},\"inflight\":{},\"threads\":{},\"batch\":{},\"check\":{},\
             \"elapsed_s\":{:.3},\"rps\":{:.0},\"sent\":{},\"completed\":{},\"echoed\":{},\"timeouts\":{},\
             \"stale\":{},\"invalid\":{},\"error_responses\":{},\"check_failed\":{},\"refused\":{},\
             \"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"mean_us\":{:.1}}}",
            target,
            cfg.sockets,
            cfg.inflight,
            cfg.threads,
            cfg.batch,
            cfg.check,
            r.elapsed.as_secs_f64(),
            r.rps,
            c.sent,
            c.completed,
            c.echoed,
            c.timeouts,
            c.stale,
            c.invalid,
            c.error_responses,
            c.check_failed,
            c.refused,
            us(h.quantile(0.50)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max()),
            us(h.mean()),
        );
    } else {
        println!(
            "{target}: {:.0} req/s over {:.2} s ({} answered, {} echoed; {}x{} in flight, {} thread(s)) \
             latency p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us; lost/timeouts {}, stale {}, \
             invalid {}, error responses {}, check failed {}, refused {}",
            r.rps,
            r.elapsed.as_secs_f64(),
            c.completed,
            c.echoed,
            cfg.sockets,
            cfg.inflight,
            cfg.threads,
            us(h.quantile(0.50)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max()),
            c.timeouts,
            c.stale,
            c.invalid,
            c.error_responses,
            c.check_failed,
            c.refused,
        );
    }
    if r.total_completed == 0 {
        bail!(
            "no valid answer from {target} (timeouts {}, invalid {}, error responses {}, check failed {}, \
             refused {}){}",
            c.timeouts,
            c.invalid,
            c.error_responses,
            c.check_failed,
            c.refused,
            if c.invalid > 0 && !cfg.accept_echo { "; an echo server needs --accept-echo" } else { "" }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.command {
        Some(Command::Echo(e)) => echo::run(&echo::EchoConfig {
            bind: e.bind,
            threads: usize::from(e.threads),
            batch: usize::from(e.batch),
            max_time: Duration::from_secs(e.max_time),
        }),
        None => run_load(&cli.load),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stunload: {e:#}");
            ExitCode::FAILURE
        }
    }
}
