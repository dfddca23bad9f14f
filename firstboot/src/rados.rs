// SPDX-License-Identifier: Apache-2.0
//! Ceph monitor commands through librados (device). The `ceph` command is
//! Python: seconds of CPU for every call on a small board, and minutes of a
//! first boot under emulation. librados is loaded when first needed
//! (`dlopen`), so the agent builds without Ceph's headers and runs on nodes
//! where Ceph is off.
// The FFI needs unsafe; each call below checks its pointers and codes.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Errors are messages, as everywhere in the agent (a leaf: no crate imports).
type Result<T> = std::result::Result<T, String>;

type Handle = *mut c_void;

type CreateFn = unsafe extern "C" fn(*mut Handle, *const c_char) -> c_int;
type ConfReadFileFn = unsafe extern "C" fn(Handle, *const c_char) -> c_int;
type ConfSetFn = unsafe extern "C" fn(Handle, *const c_char, *const c_char) -> c_int;
type ConnectFn = unsafe extern "C" fn(Handle) -> c_int;
type MonCommandFn = unsafe extern "C" fn(
    Handle,
    *mut *const c_char,
    usize,
    *const c_char,
    usize,
    *mut *mut c_char,
    *mut usize,
    *mut *mut c_char,
    *mut usize,
) -> c_int;
type BufferFreeFn = unsafe extern "C" fn(*mut c_char);
type ShutdownFn = unsafe extern "C" fn(Handle);

struct Api {
    create: CreateFn,
    conf_read_file: ConfReadFileFn,
    conf_set: ConfSetFn,
    connect: ConnectFn,
    mon_command: MonCommandFn,
    buffer_free: BufferFreeFn,
    shutdown: ShutdownFn,
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated, valid until the next dl call.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

fn load() -> Result<Api> {
    // SAFETY: a constant NUL-terminated name; the library stays loaded.
    let h = unsafe { libc::dlopen(c"librados.so.2".as_ptr(), libc::RTLD_NOW) };
    if h.is_null() {
        return Err(format!(
            "loading librados.so.2: {} (install librados2)",
            dlerror()
        ));
    }
    let sym = |name: &CStr| -> Result<*mut c_void> {
        // SAFETY: h is a live handle and name is NUL-terminated.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        if p.is_null() {
            Err(format!("librados.so.2 has no {}", name.to_string_lossy()))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol is cast to its prototype in librados.h.
    unsafe {
        Ok(Api {
            create: std::mem::transmute::<*mut c_void, CreateFn>(sym(c"rados_create")?),
            conf_read_file: std::mem::transmute::<*mut c_void, ConfReadFileFn>(sym(
                c"rados_conf_read_file",
            )?),
            conf_set: std::mem::transmute::<*mut c_void, ConfSetFn>(sym(c"rados_conf_set")?),
            connect: std::mem::transmute::<*mut c_void, ConnectFn>(sym(c"rados_connect")?),
            mon_command: std::mem::transmute::<*mut c_void, MonCommandFn>(sym(
                c"rados_mon_command",
            )?),
            buffer_free: std::mem::transmute::<*mut c_void, BufferFreeFn>(sym(
                c"rados_buffer_free",
            )?),
            shutdown: std::mem::transmute::<*mut c_void, ShutdownFn>(sym(c"rados_shutdown")?),
        })
    }
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<Result<Api>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn errno(rc: c_int) -> String {
    std::io::Error::from_raw_os_error(-rc).to_string()
}

/// A connected cluster handle for one `ceph.conf` and keyring.
pub struct Client {
    h: Handle,
    conf: String,
}

// SAFETY: librados handles may be used from any thread; the agent also
// serialises every use behind a Mutex.
unsafe impl Send for Client {}

fn cstr(s: &[u8], what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| format!("{what} holds a NUL byte"))
}

impl Client {
    /// Connects as `client.admin`, waiting at most `timeout` for a monitor
    /// (and every command after at most `timeout` too).
    pub fn connect(conf: &Path, keyring: &Path, timeout: Duration) -> Result<Client> {
        let api = api()?;
        let text = std::fs::read_to_string(conf)
            .map_err(|e| format!("reading {}: {e}", conf.display()))?;
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: h is written by rados_create; the id is NUL-terminated.
        let rc = unsafe { (api.create)(&mut h, c"admin".as_ptr()) };
        if rc < 0 || h.is_null() {
            return Err(format!("rados_create: {}", errno(rc)));
        }
        // From here on Drop shuts the handle down, whatever fails.
        let c = Client { h, conf: text };
        let path = cstr(conf.as_os_str().as_bytes(), "the ceph.conf path")?;
        // SAFETY: live handle, NUL-terminated path.
        let rc = unsafe { (api.conf_read_file)(c.h, path.as_ptr()) };
        if rc < 0 {
            return Err(format!("reading {}: {}", conf.display(), errno(rc)));
        }
        let secs = timeout.as_secs().max(1).to_string();
        for (k, v) in [
            ("keyring", keyring.as_os_str().as_bytes()),
            ("client_mount_timeout", secs.as_bytes()),
            ("rados_mon_op_timeout", secs.as_bytes()),
        ] {
            let (kc, vc) = (cstr(k.as_bytes(), k)?, cstr(v, k)?);
            // SAFETY: live handle, NUL-terminated option and value.
            let rc = unsafe { (api.conf_set)(c.h, kc.as_ptr(), vc.as_ptr()) };
            if rc < 0 {
                return Err(format!("setting {k}: {}", errno(rc)));
            }
        }
        // SAFETY: live, configured handle.
        let rc = unsafe { (api.connect)(c.h) };
        if rc < 0 {
            return Err(format!("connecting to the monitors: {}", errno(rc)));
        }
        Ok(c)
    }

    /// One monitor command: its output buffer, or the monitor's message.
    pub fn command(
        &self,
        cmd: &str,
        inbuf: &[u8],
    ) -> std::result::Result<Vec<u8>, (c_int, String)> {
        let api = api().map_err(|e| (0, e))?;
        let c = cstr(cmd.as_bytes(), "the command").map_err(|e| (0, e))?;
        let mut cmds = [c.as_ptr()];
        let (mut ob, mut obl, mut os, mut osl) = (
            std::ptr::null_mut::<c_char>(),
            0usize,
            std::ptr::null_mut::<c_char>(),
            0usize,
        );
        // SAFETY: one NUL-terminated command; inbuf is valid for its length;
        // the out pointers are written by librados and freed below.
        let rc = unsafe {
            (api.mon_command)(
                self.h,
                cmds.as_mut_ptr(),
                1,
                inbuf.as_ptr().cast(),
                inbuf.len(),
                &mut ob,
                &mut obl,
                &mut os,
                &mut osl,
            )
        };
        let take = |p: *mut c_char, len: usize| -> Vec<u8> {
            if p.is_null() {
                return Vec::new();
            }
            // SAFETY: librados allocated len bytes at p.
            let v = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec();
            // SAFETY: p came from librados and is freed once.
            unsafe { (api.buffer_free)(p) };
            v
        };
        let out = take(ob, obl);
        let status = String::from_utf8_lossy(&take(os, osl)).trim().to_string();
        if rc < 0 {
            let why = if status.is_empty() {
                errno(rc)
            } else {
                format!("{}: {status}", errno(rc))
            };
            return Err((rc, why));
        }
        Ok(out)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: the handle came from rados_create and is shut down once.
            unsafe { (api.shutdown)(self.h) };
        }
    }
}

/// How long a connect or a command may wait for the monitors.
const TIMEOUT: Duration = Duration::from_secs(60);

static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

/// Closes the kept connection. Call before the process exits: librados'
/// threads outliving `main` have aborted a finished `hc ceph` in OpenSSL.
pub fn shutdown() {
    *CLIENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// A monitor command with this node's admin key (`root` is the system root:
/// `/` on a device). The connection is kept for the next command, and made
/// again when `ceph.conf` changed or the last one failed to reach a monitor.
pub fn mon_command(root: &Path, cmd: &str, inbuf: &[u8]) -> Result<Vec<u8>> {
    let conf = root.join("etc/ceph/ceph.conf");
    let keyring = root.join("etc/ceph/ceph.client.admin.keyring");
    let text =
        std::fs::read_to_string(&conf).map_err(|e| format!("reading {}: {e}", conf.display()))?;
    let mut g = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    if g.as_ref().is_none_or(|c| c.conf != text) {
        *g = None;
        *g = Some(Client::connect(&conf, &keyring, TIMEOUT)?);
    }
    let client = g.as_ref().ok_or("no monitor connection")?;
    match client.command(cmd, inbuf) {
        Ok(out) => Ok(out),
        Err((rc, why)) => {
            // Lost or never had the monitors: connect afresh next time.
            if [
                libc::ETIMEDOUT,
                libc::ENOTCONN,
                libc::ESHUTDOWN,
                libc::ECONNREFUSED,
            ]
            .contains(&-rc)
            {
                *g = None;
            }
            Err(why)
        }
    }
}
