//! The control channel on Windows: a named pipe (`\\.\pipe\punchd-NAME` by default, control/path.rs) that
//! only the daemon's own user can open (docs/windows.md, "The control pipe"):
//!
//! - its security descriptor is explicit: owner the daemon's user, a protected DACL granting that user (and
//!   SYSTEM) and nobody else; a daemon running as SYSTEM (a service) also lets elevated administrators in,
//!   as a root daemon's socket lets root in on Unix;
//! - the first instance is created with FILE_FLAG_FIRST_PIPE_INSTANCE, so a pipe of that name made by another
//!   process first is an error, never shared; remote clients are rejected (PIPE_REJECT_REMOTE_CLIENTS);
//! - the client opens it at SECURITY_IDENTIFICATION (a planted server cannot act as the client) and trusts it
//!   only when its owner is the client's own user or SYSTEM.
//!
//! All I/O is overlapped with a timeout, so accepts notice the stop flag and silent clients are closed, as
//! the Unix socket's timeouts do. Serving is shared (`serve.rs`).

use super::serve::{self, ACCEPT_POLL, READ_TIMEOUT, WRITE_TIMEOUT};
use super::Command;
use crate::status::Snapshot;
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation as F;
use windows_sys::Win32::Security as S;
use windows_sys::Win32::Security::Authorization as A;
use windows_sys::Win32::Storage::FileSystem as FS;
use windows_sys::Win32::System::{Pipes, Threading, IO as WIO};

/// Pipe buffer sizes: a request line is at most 4 KiB; answers larger than this just take several writes.
const BUFFER: u32 = 64 * 1024;

/// A running control pipe. Dropping it stops the thread and closes every instance (the name goes with them).
pub struct ControlServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Creates pipe `name` (see [`pipe_name`]) as its first instance and starts serving. Refuses when the
    /// name is taken (another punchd, or anyone else's pipe).
    pub fn start(name: &Path, snapshot: Snapshot, commands: mpsc::Sender<Command>) -> Result<ControlServer> {
        let name = pipe_name(name);
        let shown = name.to_string_lossy().into_owned();
        if let Some(why) = taken(&name) {
            bail!("{why}");
        }
        let security = Security::for_current_user().context("control pipe: security descriptor")?;
        let first = create_instance(&name, &security, true).map_err(|e| match e.raw_os_error().map(|c| c as u32) {
            Some(F::ERROR_ACCESS_DENIED | F::ERROR_PIPE_BUSY) => {
                anyhow!("control pipe {shown} is in use (another punchd? choose --control)")
            }
            _ => anyhow!("cannot create control pipe {shown}: {e}"),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut listener = Listener { name, security, pending: Some(first) };
        let thread = thread::Builder::new()
            .name("control".into())
            .spawn(move || serve::accept_loop(move || listener.accept(), snapshot, commands, flag))
            .context("starting the control thread")?;
        log::info!("control pipe {shown}");
        Ok(ControlServer { stop, thread: Some(thread) })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `\\.\pipe\X` as given, or a bare `X` under `\\.\pipe\`.
pub fn pipe_name(name: &Path) -> std::ffi::OsString {
    let s = name.as_os_str();
    if s.to_string_lossy().starts_with(r"\\") {
        s.to_owned()
    } else {
        let mut full = std::ffi::OsString::from(r"\\.\pipe\");
        full.push(s);
        full
    }
}

/// Why pipe `name` cannot be ours, when it exists: it is opened as a client would. FILE_FLAG_FIRST_PIPE_INSTANCE
/// alone refuses a taken name without a race on Windows, but Wine 8.0 ignores the flag (docs/windows.md), and
/// this check also says who is there.
fn taken(name: &OsStr) -> Option<String> {
    let shown = name.to_string_lossy();
    let opened =
        std::fs::OpenOptions::new().read(true).write(true).security_qos_flags(FS::SECURITY_IDENTIFICATION).open(name);
    match opened {
        Ok(_) => Some(format!("another punchd is running on control pipe {shown}")),
        Err(e) => match e.raw_os_error().map(|c| c as u32) {
            Some(F::ERROR_PIPE_BUSY) => Some(format!("another punchd is running on control pipe {shown} (busy)")),
            Some(F::ERROR_ACCESS_DENIED) => Some(format!(
                "control pipe {shown} exists and is another user's; refusing to share it (choose --control)"
            )),
            // Not there (or a name the system refuses, which creating it will report).
            _ => None,
        },
    }
}

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// One instance of the pipe, waiting for a client (overlapped handle).
fn create_instance(name: &OsStr, security: &Security, first: bool) -> io::Result<OwnedHandle> {
    let attrs = S::SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<S::SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: security.descriptor,
        bInheritHandle: 0,
    };
    let mut mode = FS::PIPE_ACCESS_DUPLEX | FS::FILE_FLAG_OVERLAPPED;
    if first {
        mode |= FS::FILE_FLAG_FIRST_PIPE_INSTANCE;
    }
    let kind = Pipes::PIPE_TYPE_BYTE | Pipes::PIPE_READMODE_BYTE | Pipes::PIPE_WAIT | Pipes::PIPE_REJECT_REMOTE_CLIENTS;
    let wname = wide(name);
    // SAFETY: `wname` is NUL-terminated and `attrs` points at a descriptor that outlives the call.
    let h = unsafe {
        Pipes::CreateNamedPipeW(wname.as_ptr(), mode, kind, Pipes::PIPE_UNLIMITED_INSTANCES, BUFFER, BUFFER, 0, &attrs)
    };
    if h == F::INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// The accepting side: the instance waiting for the next client, its ConnectNamedPipe possibly in flight.
struct Listener {
    name: std::ffi::OsString,
    security: Security,
    pending: Option<OwnedHandle>,
}

impl Listener {
    /// Waits up to [`ACCEPT_POLL`] for a client on the pending instance; a connected instance is returned as
    /// a stream and a new instance takes its place (the name never goes free while the daemon runs).
    fn accept(&mut self) -> io::Result<Option<PipeStream>> {
        let handle = match self.pending.take() {
            Some(h) => h,
            None => create_instance(&self.name, &self.security, false)?,
        };
        let op = Overlapped::new()?;
        // SAFETY: the handle and the OVERLAPPED (with its event) stay alive until the operation is finished
        // or cancelled and waited for (Overlapped::finish).
        let ok = unsafe { Pipes::ConnectNamedPipe(handle.as_raw_handle(), op.ptr()) };
        let connected = if ok != 0 {
            true
        } else {
            // SAFETY: reads the calling thread's last error.
            match unsafe { F::GetLastError() } {
                F::ERROR_PIPE_CONNECTED => true,
                F::ERROR_IO_PENDING => match op.finish(&handle, ACCEPT_POLL) {
                    Ok(_) => true,
                    // Cancelled: the instance keeps listening, and the next call connects it again (a
                    // client that came meanwhile is then ERROR_PIPE_CONNECTED).
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        self.pending = Some(handle);
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                },
                // The client came and went before we looked: start over on a fresh instance.
                F::ERROR_NO_DATA => false,
                code => return Err(io::Error::from_raw_os_error(code as i32)),
            }
        };
        // The next instance exists before this one is handed over, so the name stays ours.
        self.pending = Some(create_instance(&self.name, &self.security, false)?);
        Ok(connected.then(|| PipeStream::new(handle, READ_TIMEOUT, WRITE_TIMEOUT)))
    }
}

/// One overlapped operation: an OVERLAPPED with its own manual-reset event.
struct Overlapped {
    ov: Box<WIO::OVERLAPPED>,
    event: OwnedHandle,
}

impl Overlapped {
    fn new() -> io::Result<Overlapped> {
        // SAFETY: no attributes, no name; a manual-reset event, not signalled.
        let e = unsafe { Threading::CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if e.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle owned by nobody else.
        let event = unsafe { OwnedHandle::from_raw_handle(e) };
        // SAFETY: OVERLAPPED is plain data; all zero is its documented initial state.
        let mut ov: Box<WIO::OVERLAPPED> = Box::new(unsafe { std::mem::zeroed() });
        ov.hEvent = event.as_raw_handle();
        Ok(Overlapped { ov, event })
    }

    fn ptr(&self) -> *mut WIO::OVERLAPPED {
        (&*self.ov as *const WIO::OVERLAPPED).cast_mut()
    }

    /// Waits up to `limit` for the operation started on `handle`; on timeout it is cancelled (and waited
    /// for, so the buffers it names are free again) and the answer is TimedOut.
    fn finish(&self, handle: &OwnedHandle, limit: Duration) -> io::Result<u32> {
        let ms = limit.as_millis().min(u128::from(u32::MAX - 1)) as u32;
        // SAFETY: the event handle is open.
        let waited = unsafe { Threading::WaitForSingleObject(self.event.as_raw_handle(), ms) };
        let timed_out = waited == F::WAIT_TIMEOUT;
        if timed_out {
            // SAFETY: cancels only this operation; it may have completed meanwhile, which is fine.
            unsafe { WIO::CancelIoEx(handle.as_raw_handle(), self.ptr()) };
        }
        let mut n = 0u32;
        // SAFETY: waits (bWait = TRUE) until the operation is no longer in flight.
        let ok = unsafe { WIO::GetOverlappedResult(handle.as_raw_handle(), self.ptr(), &mut n, 1) };
        if ok != 0 {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error().map(|c| c as u32) {
            Some(F::ERROR_OPERATION_ABORTED) if timed_out => Err(io::ErrorKind::TimedOut.into()),
            _ => Err(e),
        }
    }
}

/// A connected pipe end with read and write timeouts (both sides use it). `&PipeStream` reads and writes,
/// like `&UnixStream`; each operation has its own event, so a read and a write may overlap.
pub struct PipeStream {
    handle: OwnedHandle,
    read_timeout: Duration,
    write_timeout: Duration,
}

impl PipeStream {
    fn new(handle: OwnedHandle, read_timeout: Duration, write_timeout: Duration) -> PipeStream {
        PipeStream { handle, read_timeout, write_timeout }
    }
}

impl io::Read for &PipeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let op = Overlapped::new()?;
        let len = buf.len().min(u32::MAX as usize) as u32;
        // SAFETY: `buf` and the OVERLAPPED outlive the operation: finish() returns only when it is over.
        let ok =
            unsafe { FS::ReadFile(self.handle.as_raw_handle(), buf.as_mut_ptr(), len, std::ptr::null_mut(), op.ptr()) };
        // SAFETY: reads the calling thread's last error.
        let result = if ok != 0 || unsafe { F::GetLastError() } == F::ERROR_IO_PENDING {
            op.finish(&self.handle, self.read_timeout)
        } else {
            Err(io::Error::last_os_error())
        };
        match result {
            Ok(n) => Ok(n as usize),
            // The other end closed: end of stream.
            Err(e)
                if matches!(
                    e.raw_os_error().map(|c| c as u32),
                    Some(F::ERROR_BROKEN_PIPE | F::ERROR_PIPE_NOT_CONNECTED)
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}

impl io::Write for &PipeStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let op = Overlapped::new()?;
        let len = buf.len().min(u32::MAX as usize) as u32;
        // SAFETY: as in read().
        let ok =
            unsafe { FS::WriteFile(self.handle.as_raw_handle(), buf.as_ptr(), len, std::ptr::null_mut(), op.ptr()) };
        // SAFETY: reads the calling thread's last error.
        if ok != 0 || unsafe { F::GetLastError() } == F::ERROR_IO_PENDING {
            op.finish(&self.handle, self.write_timeout).map(|n| n as usize)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The client's connection to the daemon's pipe `name`, with `timeout` on reads, writes and a busy pipe.
/// Refuses a pipe whose owner is neither the caller's user nor SYSTEM: it was not made by our daemon.
pub fn connect(name: &Path, timeout: Duration) -> Result<PipeStream> {
    let name = pipe_name(name);
    let shown = name.to_string_lossy().into_owned();
    let deadline = Instant::now() + timeout;
    let file = loop {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(FS::FILE_FLAG_OVERLAPPED)
            .security_qos_flags(FS::SECURITY_IDENTIFICATION)
            .open(&name);
        match opened {
            Ok(f) => break f,
            Err(e) => match e.raw_os_error().map(|c| c as u32) {
                Some(F::ERROR_FILE_NOT_FOUND) => bail!("no punchd is running with control pipe {shown}"),
                Some(F::ERROR_ACCESS_DENIED) => {
                    bail!("not allowed to use control pipe {shown} (another user's daemon?)")
                }
                Some(F::ERROR_PIPE_BUSY) if Instant::now() < deadline => {
                    // Every instance is taken for a moment (the daemon makes the next one right away).
                    let ms = deadline.saturating_duration_since(Instant::now()).as_millis().max(1) as u32;
                    let wname = wide(&name);
                    // SAFETY: `wname` is NUL-terminated.
                    unsafe { Pipes::WaitNamedPipeW(wname.as_ptr(), ms) };
                }
                _ => bail!("cannot open control pipe {shown}: {e}"),
            },
        }
    };
    let handle = OwnedHandle::from(file);
    if !owner_is_trusted(&handle).with_context(|| format!("control pipe {shown}: reading its owner"))? {
        bail!("control pipe {shown} belongs to another user; refusing to trust it");
    }
    Ok(PipeStream::new(handle, timeout, timeout))
}

/// Whether `handle`'s owner is the current user or SYSTEM.
fn owner_is_trusted(handle: &OwnedHandle) -> io::Result<bool> {
    let me = TokenUser::current()?;
    let mut owner: S::PSID = std::ptr::null_mut();
    let mut sd: S::PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: out-pointers are valid; `owner` points into `sd`, which is freed below after its last use.
    let rc = unsafe {
        A::GetSecurityInfo(
            handle.as_raw_handle(),
            A::SE_KERNEL_OBJECT,
            S::OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != F::ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    // SAFETY: both SIDs are valid (ours from the token buffer, the owner inside `sd`).
    let trusted = !owner.is_null()
        && unsafe { S::EqualSid(owner, me.sid()) != 0 || S::IsWellKnownSid(owner, S::WinLocalSystemSid) != 0 };
    // SAFETY: `sd` was allocated by GetSecurityInfo with LocalAlloc.
    unsafe { F::LocalFree(sd) };
    Ok(trusted)
}

/// The current process's user (TOKEN_USER), in a buffer that holds the SID it points to.
struct TokenUser(Vec<u64>);

impl TokenUser {
    fn current() -> io::Result<TokenUser> {
        let mut token: F::HANDLE = std::ptr::null_mut();
        // SAFETY: GetCurrentProcess is a pseudo-handle; `token` is a valid out-pointer.
        if unsafe { Threading::OpenProcessToken(Threading::GetCurrentProcess(), S::TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle owned by nobody else.
        let token = unsafe { OwnedHandle::from_raw_handle(token) };
        let mut need = 0u32;
        // SAFETY: a size query with no buffer.
        unsafe { S::GetTokenInformation(token.as_raw_handle(), S::TokenUser, std::ptr::null_mut(), 0, &mut need) };
        // u64 elements: the buffer is aligned for TOKEN_USER's pointer.
        let mut buf = vec![0u64; (need as usize).div_ceil(8).max(1)];
        // SAFETY: `buf` holds at least `need` bytes.
        let ok = unsafe {
            S::GetTokenInformation(token.as_raw_handle(), S::TokenUser, buf.as_mut_ptr().cast(), need, &mut need)
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TokenUser(buf))
    }

    fn sid(&self) -> S::PSID {
        // SAFETY: the buffer holds a TOKEN_USER written by GetTokenInformation.
        unsafe { (*self.0.as_ptr().cast::<S::TOKEN_USER>()).User.Sid }
    }

    /// The SID in string form (`S-1-5-21-...`), for SDDL.
    fn sid_string(&self) -> io::Result<String> {
        let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
        // SAFETY: a valid SID; `text` receives a LocalAlloc'd NUL-terminated string, freed below.
        if unsafe { A::ConvertSidToStringSidW(self.sid(), &mut text) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `text` is NUL-terminated.
        let len = (0..).take_while(|&i| unsafe { *text.add(i) } != 0).count();
        // SAFETY: `len` u16s are readable at `text`.
        let s = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) });
        // SAFETY: allocated by ConvertSidToStringSidW.
        unsafe { F::LocalFree(text.cast()) };
        Ok(s)
    }

    fn is_system(&self) -> bool {
        // SAFETY: a valid SID.
        unsafe { S::IsWellKnownSid(self.sid(), S::WinLocalSystemSid) != 0 }
    }
}

/// The pipe's security descriptor (self-relative, LocalAlloc'd), built from SDDL.
struct Security {
    descriptor: S::PSECURITY_DESCRIPTOR,
}

// SAFETY: the descriptor is immutable after creation and only read by CreateNamedPipeW.
unsafe impl Send for Security {}

impl Security {
    /// Owner: the current user. Protected DACL (`P`: nothing inherited): full access for the current user
    /// and SYSTEM; for a daemon running as SYSTEM also read/write for the Administrators group, which only
    /// an elevated administrator's token carries. Everyone else, the network included, has no entry.
    fn for_current_user() -> io::Result<Security> {
        let user = TokenUser::current()?;
        let sid = user.sid_string()?;
        let admins = if user.is_system() { "(A;;GRGW;;;BA)" } else { "" };
        let sddl = format!("O:{sid}D:P(A;;GA;;;{sid})(A;;GA;;;SY){admins}");
        let wsddl = wide(OsStr::new(&sddl));
        let mut descriptor: S::PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `wsddl` is NUL-terminated; the descriptor is freed in Drop.
        let ok = unsafe {
            A::ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wsddl.as_ptr(),
                A::SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Security { descriptor })
    }
}

impl Drop for Security {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
        unsafe { F::LocalFree(self.descriptor) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::serve::MAX_CONNECTIONS;
    use super::super::Response;
    use super::*;
    use crate::status::Status;
    use std::io::{BufRead, BufReader, Write};
    use std::path::PathBuf;
    use std::sync::Mutex;

    fn read_line(s: &PipeStream) -> Response {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// Clients beyond the bound get one error line; those within it are served; a second server of the name
    /// is refused; the name is free again after the server is dropped (run under Wine: docs/windows.md).
    #[test]
    fn connections_are_bounded_and_the_name_is_ours() {
        let name = PathBuf::from(format!("punchd-unit-{}", std::process::id()));
        let snap: Snapshot = Arc::new(Mutex::new(Status::default()));
        let (tx, _rx) = mpsc::channel();
        let server = ControlServer::start(&name, Arc::clone(&snap), tx.clone()).unwrap();
        let e = ControlServer::start(&name, snap, tx).err().unwrap().to_string();
        assert!(e.starts_with("another punchd is running on control pipe"), "{e}");
        let limit = Duration::from_secs(5);
        let idle: Vec<PipeStream> = (0..MAX_CONNECTIONS).map(|_| connect(&name, limit).unwrap()).collect();
        // The accept loop takes connections in order: the idle ones are counted before this one.
        let extra = connect(&name, limit).unwrap();
        assert_eq!(read_line(&extra).error.as_deref(), Some("too many control connections; try again"));
        let mut first = &idle[0];
        first.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        assert!(read_line(first).ok);
        drop(idle);
        drop(server);
        let e = connect(&name, limit).err().unwrap().to_string();
        assert!(e.starts_with("no punchd is running with control pipe"), "{e}");
    }
}
