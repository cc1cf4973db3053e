//! `delayline`: the lab's userspace delay line as a command (see `holepunch_lab::delayline`).
//!
//! `ip netns exec dl delayline --a a --b b --delay 20ms --jitter 2ms --loss 1` (or `--netns dl`) relays frames
//! between interfaces `a` and `b` with that impairment in both directions until SIGINT or SIGTERM, then prints
//! its counters.

use anyhow::{bail, Context, Result};
use clap::Parser;
use holepunch_lab::delayline::{parse_duration, DelayLine, Impairment};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Relay Ethernet frames between two interfaces with delay, jitter and loss")]
struct Args {
    /// First interface.
    #[arg(long)]
    a: String,
    /// Second interface.
    #[arg(long)]
    b: String,
    /// Network namespace (`ip netns` name) holding both interfaces; default: the current one.
    #[arg(long)]
    netns: Option<String>,
    /// One-way delay, both directions (e.g. 20ms, 1.5ms, 250us).
    #[arg(long, value_parser = dur, default_value = "0ms")]
    delay: Duration,
    /// Uniform jitter ± this much.
    #[arg(long, value_parser = dur, default_value = "0ms")]
    jitter: Duration,
    /// Loss percentage (0-100), each direction.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Let jitter reorder frames.
    #[arg(long)]
    reorder: bool,
    /// Run at normal priority instead of SCHED_FIFO.
    #[arg(long)]
    no_realtime: bool,
    /// Delay from b to a when it differs from --delay.
    #[arg(long, value_parser = dur)]
    delay_back: Option<Duration>,
}

fn dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let forward =
        Impairment::delay(args.delay).with_jitter(args.jitter).with_loss(args.loss).with_reorder(args.reorder);
    let mut back = forward.clone();
    if let Some(d) = args.delay_back {
        back.delay = d;
    }

    // Block the stop signals before any thread starts, so every thread inherits the mask and sigwait below is
    // the only place they are taken.
    // SAFETY: plain signal-mask calls on a local, initialised set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("cannot block signals");
        }
        set
    };

    let line = DelayLine::start(args.netns.as_deref(), &args.a, &args.b, forward, back)
        .context("cannot start the delay line")?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
    if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
        bail!("sigwait failed");
    }
    let stats = line.stop();
    for (name, d) in
        [(format!("{}->{}", args.a, args.b), stats.a_to_b), (format!("{}->{}", args.b, args.a), stats.b_to_a)]
    {
        println!(
            "{name}: received {} delivered {} lost {} overflow {} errors {} late {} (max {} us)",
            d.received, d.delivered, d.lost, d.overflow, d.errors, d.late, d.max_late_us
        );
    }
    Ok(())
}
