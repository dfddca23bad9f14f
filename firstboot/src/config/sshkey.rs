// SPDX-License-Identifier: Apache-2.0
//! One line of `ssh.authorized_keys`: a bare OpenSSH public key. Options
//! (`command=`, `permitopen=`, ...) are refused: the node decides what a
//! login may do, and an option could reopen forwarding that sshd turns off.

use base64::Engine as _;

const TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The smallest RSA modulus accepted (OpenSSH refuses under 1024; NIST and
/// DevSec's ssh baseline want 2048).
pub const MIN_RSA_BITS: usize = 2048;

const PASTE: &str = "paste one line of a .pub file, e.g. \"ssh-ed25519 AAAA... you@laptop\"";

/// Ok when `line` is a key sshd accepts and we allow; else the problem and
/// the fix.
pub fn check(line: &str) -> Result<(), (String, &'static str)> {
    let mut f = line.split_whitespace();
    let kind = f.next().unwrap_or("");
    if !TYPES.contains(&kind) {
        if kind.contains('=') || kind.contains(',') || is_flag(kind) {
            return Err((
                format!("starts with key options ({kind:?}), which are not accepted"),
                "remove the options before the key type: logins get the node's own limits",
            ));
        }
        return Err(("not an OpenSSH public key".into(), PASTE));
    }
    let blob = f
        .next()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| (format!("{kind} key whose data is not base64"), PASTE))?;
    let mut r = Reader(&blob);
    let inner = r
        .string()
        .ok_or_else(|| ("key data is truncated".to_string(), PASTE))?;
    if inner != kind.as_bytes() {
        return Err((
            format!(
                "says {kind} but its data is a {} key",
                String::from_utf8_lossy(inner)
            ),
            PASTE,
        ));
    }
    if kind == "ssh-rsa" {
        let bits = r
            .string()
            .and_then(|_e| r.string())
            .map(mpint_bits)
            .ok_or_else(|| ("ssh-rsa key data is truncated".to_string(), PASTE))?;
        if bits < MIN_RSA_BITS {
            return Err((
                format!("ssh-rsa key of {bits} bits, fewer than {MIN_RSA_BITS}"),
                "make an Ed25519 key (`ssh-keygen -t ed25519`) and paste its .pub line",
            ));
        }
    }
    Ok(())
}

/// Options without a value (`no-pty`, `restrict`, `cert-authority`, ...).
fn is_flag(w: &str) -> bool {
    w.starts_with("no-") || ["restrict", "cert-authority", "pty"].contains(&w)
}

fn mpint_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// SSH wire strings: a big-endian u32 length, then the bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let s = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(s)
    }
}
