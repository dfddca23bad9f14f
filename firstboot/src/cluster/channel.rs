// SPDX-License-Identifier: Apache-2.0
//! The join channel (device): TCP port 7476, a Noise `NNpsk0` handshake keyed
//! from the cluster secret (fresh ephemeral keys per connection, so it is both
//! authenticated and replay-proof), then length-prefixed encrypted frames.
//! Swarm tokens and later Ceph keys travel only here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::secret::ClusterSecret;

pub const PORT: u16 = 7476;
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"hc-image join v1";
/// Plaintext, unauthenticated courtesy sent on a failed handshake so the
/// other side can say why instead of "connection closed".
const REFUSED: &[u8] = b"HC-REFUSED cluster-secret";
const MAX_FRAME: usize = 65535;

pub type Result<T> = std::result::Result<T, String>;

/// Why a connection did not become a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The other side holds another cluster secret.
    WrongSecret(String),
    /// Unreachable, timed out or closed: may work later.
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::WrongSecret(m) | ConnectError::Failed(m) => f.write_str(m),
        }
    }
}

pub struct Channel {
    stream: TcpStream,
    noise: snow::TransportState,
    buf: Vec<u8>,
}

fn handshake_state(secret: &ClusterSecret, initiator: bool) -> Result<snow::HandshakeState> {
    let psk = secret.derive("join");
    let params: snow::params::NoiseParams = PATTERN
        .parse()
        .map_err(|e| format!("noise parameters: {e:?}"))?;
    let b = snow::Builder::new(params).prologue(PROLOGUE).psk(0, &psk);
    let r = if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    };
    r.map_err(|e| format!("noise handshake setup: {e:?}"))
}

fn write_frame(s: &mut TcpStream, data: &[u8]) -> Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| "frame too large".to_string())?;
    s.write_all(&len.to_be_bytes())
        .and_then(|()| s.write_all(data))
        .map_err(|e| format!("sending: {e}"))
}

fn read_frame(s: &mut TcpStream) -> Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the peer closed the connection".to_string(),
        _ => format!("receiving: {e}"),
    })?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)
        .map_err(|e| format!("receiving: {e}"))?;
    Ok(buf)
}

impl Channel {
    /// Connects to a cluster member and authenticates both ways.
    pub fn connect(
        addr: SocketAddr,
        secret: &ClusterSecret,
        timeout: Duration,
    ) -> std::result::Result<Channel, ConnectError> {
        let failed = ConnectError::Failed;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| failed(format!("connecting to {addr}: {e}")))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| failed(format!("{addr}: {e}")))?;
        let mut hs = handshake_state(secret, true).map_err(failed)?;
        let mut buf = vec![0u8; MAX_FRAME];
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| failed(format!("handshake: {e:?}")))?;
        write_frame(&mut stream, &buf[..n]).map_err(failed)?;
        let reply = read_frame(&mut stream).map_err(|e| failed(format!("{addr}: {e}")))?;
        if reply == REFUSED {
            return Err(ConnectError::WrongSecret(format!(
                "refused by {addr}: the cluster secret does not match (this image was built for another cluster)"
            )));
        }
        hs.read_message(&reply, &mut buf).map_err(|_| {
            ConnectError::WrongSecret(format!(
                "{addr}: handshake failed: the cluster secret does not match"
            ))
        })?;
        let noise = hs
            .into_transport_mode()
            .map_err(|e| failed(format!("handshake: {e:?}")))?;
        Ok(Channel { stream, noise, buf })
    }

    /// Accepts one connection's handshake; on a wrong secret tells the peer.
    pub fn accept(
        mut stream: TcpStream,
        secret: &ClusterSecret,
        timeout: Duration,
    ) -> Result<Channel> {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("{peer}: {e}"))?;
        let mut hs = handshake_state(secret, false)?;
        let mut buf = vec![0u8; MAX_FRAME];
        let first = read_frame(&mut stream)?;
        if hs.read_message(&first, &mut buf).is_err() {
            let _ = write_frame(&mut stream, REFUSED);
            return Err(format!(
                "refused {peer}: handshake failed, it holds another cluster secret"
            ));
        }
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| format!("handshake: {e:?}"))?;
        write_frame(&mut stream, &buf[..n])?;
        let noise = hs
            .into_transport_mode()
            .map_err(|e| format!("handshake: {e:?}"))?;
        Ok(Channel { stream, noise, buf })
    }

    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX_FRAME - 16 {
            return Err("message too large".into());
        }
        let n = self
            .noise
            .write_message(msg, &mut self.buf)
            .map_err(|e| format!("encrypting: {e:?}"))?;
        let frame = self.buf[..n].to_vec();
        write_frame(&mut self.stream, &frame)
    }

    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let frame = read_frame(&mut self.stream)?;
        let n = self
            .noise
            .read_message(&frame, &mut self.buf)
            .map_err(|_| "a frame failed authentication".to_string())?;
        Ok(self.buf[..n].to_vec())
    }

    pub fn send_json<T: serde::Serialize>(&mut self, v: &T) -> Result<()> {
        let b = serde_json::to_vec(v).map_err(|e| format!("encoding: {e}"))?;
        self.send(&b)
    }

    pub fn recv_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        let b = self.recv()?;
        serde_json::from_slice(&b).map_err(|e| format!("decoding: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    type Pair = (Result<Channel>, std::result::Result<Channel, ConnectError>);

    fn pair(server: ClusterSecret, client: ClusterSecret) -> Pair {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            Channel::accept(s, &server, Duration::from_secs(5))
        });
        let c = Channel::connect(addr, &client, Duration::from_secs(5));
        let s = t.join().expect("server thread");
        (s, c)
    }

    #[test]
    fn same_secret_talks_both_ways() {
        let k = ClusterSecret::from_bytes([5; 32]);
        let (s, c) = pair(k.clone(), k);
        let (mut s, mut c) = (s.expect("server"), c.expect("client"));
        c.send(b"join please").expect("send");
        assert_eq!(s.recv().expect("recv"), b"join please");
        s.send(b"token").expect("send");
        assert_eq!(c.recv().expect("recv"), b"token");
    }

    #[test]
    fn wrong_secret_is_refused_with_a_reason() {
        let (s, c) = pair(
            ClusterSecret::from_bytes([5; 32]),
            ClusterSecret::from_bytes([6; 32]),
        );
        let se = s.err().expect("server must refuse");
        assert!(se.contains("another cluster secret"), "{se}");
        match c.err().expect("client must be refused") {
            ConnectError::WrongSecret(m) => assert!(m.contains("does not match"), "{m}"),
            e => panic!("not a secret refusal: {e}"),
        }
    }
}
