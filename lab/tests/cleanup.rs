//! Nothing is left behind: not after a panicking test, not after a killed process (the sweeper),
//! not after the CLI's `down`.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::probe_bin;
use holepunch_lab::{namespaces_with_prefix, require_lab, sweep_stale, Lab, Preset, SiteSpec};

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_panicking_test_leaves_no_namespace_link_or_process() {
    require_lab!();
    let seen: Mutex<Option<(String, Vec<String>, u32)>> = Mutex::new(None);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::builder()
            .server()
            .site("a", Preset::FullCone)
            .site("b", SiteSpec::new(Preset::DoubleNat).delay(Duration::from_millis(5), Duration::ZERO))
            .build()
            .unwrap();
        let p = lab.host("a1").spawn(&["sleep", "30"]).unwrap();
        let pid = p.id();
        // A process the lab does not hold a handle to: the teardown must find and kill it too.
        let stray = lab.host("b1").command("sleep").arg("30").stdout(Stdio::null()).spawn().unwrap();
        *seen.lock().unwrap() = Some((lab.prefix().to_owned(), lab.namespaces().to_vec(), stray.id()));
        assert!(alive(pid));
        std::mem::forget(stray);
        panic!("deliberate failure inside a lab test");
    }));
    assert!(r.is_err());
    let (prefix, namespaces, stray) = seen.lock().unwrap().take().unwrap();
    assert!(namespaces.len() >= 8, "{namespaces:?}");
    assert_eq!(namespaces_with_prefix(&prefix).unwrap(), Vec::<String>::new());
    for ns in namespaces {
        assert!(!std::path::Path::new(&format!("/run/netns/{ns}")).exists(), "{ns} left");
    }
    // The stray child was SIGKILLed by the teardown; reap it so /proc forgets it.
    let deadline = Instant::now() + Duration::from_secs(2);
    // SAFETY: waitpid on our own child's pid.
    while unsafe { libc::waitpid(stray as i32, std::ptr::null_mut(), libc::WNOHANG) } == 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(stray), "process {stray} survived");
    // Links lived only inside the namespaces: none of the lab's interface names is in ours.
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&prefix), "{links}");
}

#[test]
fn the_sweeper_removes_labs_of_killed_processes() {
    require_lab!();
    let mut child = Command::new(probe_bin())
        .args(["up", "3", "--unnamed", "--hold"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let prefix = format!("hl{}-0", child.id());
    // Wait for the lab to be up (its namespaces exist), then kill the process without any cleanup.
    let deadline = Instant::now() + Duration::from_secs(20);
    while namespaces_with_prefix(&prefix).unwrap().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!namespaces_with_prefix(&prefix).unwrap().is_empty(), "the killed process left nothing to sweep");
    let removed = sweep_stale().unwrap();
    assert!(removed.iter().any(|n| n.starts_with(&prefix)), "{removed:?}");
    assert!(namespaces_with_prefix(&prefix).unwrap().is_empty());
}

#[test]
fn cli_up_down_and_exec() {
    require_lab!();
    let name = format!("t{}", std::process::id());
    let up = Command::new(probe_bin()).args(["up", "1", "4", "--name", &name]).output().unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let prefix = holepunch_lab::named_prefix(&name);
    let guard = SweepOnDrop(prefix.clone());
    assert!(namespaces_with_prefix(&prefix).unwrap().len() >= 6);
    // A second lab with the same name is refused.
    let again = Command::new(probe_bin()).args(["up", "1", "--name", &name]).output().unwrap();
    assert!(!again.status.success());
    let exec = Command::new(probe_bin())
        .args(["exec", "--name", &name, "server", "--", "ip", "-brief", "addr"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&exec.stdout).contains("203.0.113.11/24"));
    let down = Command::new(probe_bin()).args(["down", "--name", &name]).output().unwrap();
    assert!(down.status.success());
    assert!(namespaces_with_prefix(&prefix).unwrap().is_empty());
    drop(guard);
}

/// Removes a CLI lab even when an assertion above fails.
struct SweepOnDrop(String);

impl Drop for SweepOnDrop {
    fn drop(&mut self) {
        let _ = holepunch_lab::sweep_prefix(&self.0);
    }
}
