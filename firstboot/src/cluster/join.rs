// SPDX-License-Identifier: Apache-2.0
//! The join protocol over the channel: a joiner names a topic (`swarm`,
//! `ceph`, ...), the member's registered answer for that topic grants a
//! payload or refuses with a typed reason. Features register answers in
//! main.rs; this module knows none of them.
//!
//! Wire (JSON in one encrypted frame each way):
//! `{"node": MAC, "addr": IPv4, "topic": "swarm"}` ->
//! `{"result": "granted", "payload": {...}}` or
//! `{"result": "refused", "refusal": {"kind": "not_yet", "reason": "..."}}`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::channel::{self, Channel, ConnectError};
use super::duty::ClusterView;
use super::peers::member_addrs;
use crate::engine::Ctx;
use crate::host::net::Lan;
use crate::secret::ClusterSecret;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner's MAC.
    pub node: String,
    pub addr: Ipv4Addr,
    pub topic: String,
}

/// Why a member did not hand something out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JoinRefusal {
    /// This member cannot hand it out yet (not a manager, no Ceph yet): ask
    /// again later, or another member.
    NotYet { reason: String },
    /// No answer for this topic is registered on the member.
    UnknownTopic { topic: String },
    /// The member tried and failed (a daemon did not answer).
    Failed { reason: String },
}

impl std::fmt::Display for JoinRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinRefusal::NotYet { reason } => write!(f, "not yet: {reason}"),
            JoinRefusal::UnknownTopic { topic } => write!(f, "nothing answers topic {topic}"),
            JoinRefusal::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
enum JoinResponse {
    Granted { payload: Value },
    Refused { refusal: JoinRefusal },
}

/// What asking a member can end in, besides a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The member holds another cluster secret: never a member of ours.
    WrongSecret(String),
    /// The member answered no.
    Refused(JoinRefusal),
    /// No answer (unreachable, timed out, garbled): try again or elsewhere.
    Failed(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::WrongSecret(m) | JoinError::Failed(m) => f.write_str(m),
            JoinError::Refused(r) => write!(f, "refused: {r}"),
        }
    }
}

/// A member's answer for one topic of the join channel.
pub trait JoinAnswer: Sync {
    fn topic(&self) -> &'static str;
    /// The payload for `req`, from what this node holds (`view` is the
    /// daemon's last look at the swarm: no slow daemon round trip here
    /// unless the answer needs one).
    fn answer(
        &self,
        cx: &Ctx,
        view: &ClusterView,
        req: &JoinRequest,
    ) -> std::result::Result<Value, JoinRefusal>;
}

/// Asks the member at `addr` for `topic` and decodes the payload as `T`.
pub fn ask<T: DeserializeOwned>(
    secret: &ClusterSecret,
    addr: Ipv4Addr,
    req: &JoinRequest,
) -> std::result::Result<T, JoinError> {
    let mut ch = Channel::connect(
        SocketAddr::V4(SocketAddrV4::new(addr, channel::PORT)),
        secret,
        // A manager may answer after a daemon call: seconds on a board.
        Duration::from_secs(120),
    )
    .map_err(|e| match e {
        ConnectError::WrongSecret(m) => JoinError::WrongSecret(m),
        ConnectError::Failed(m) => JoinError::Failed(m),
    })?;
    ch.send_json(req).map_err(JoinError::Failed)?;
    match ch.recv_json::<JoinResponse>().map_err(JoinError::Failed)? {
        JoinResponse::Granted { payload } => serde_json::from_value(payload)
            .map_err(|e| JoinError::Failed(format!("{addr} answered {}: {e}", req.topic))),
        JoinResponse::Refused { refusal } => Err(JoinError::Refused(refusal)),
    }
}

/// Asks the members in turn for `topic` until one grants it, every 5 s for
/// up to `limit`; `what` names the payload in errors ("the Ceph cluster").
pub fn fetch_from_members<T: DeserializeOwned>(
    cx: &Ctx,
    l: &Lan,
    topic: &str,
    what: &str,
    limit: Duration,
) -> std::result::Result<T, String> {
    let t = Instant::now();
    let mut last = String::from("no member answered yet");
    let req = JoinRequest {
        node: l.mac.clone(),
        addr: l.addr,
        topic: topic.into(),
    };
    loop {
        for addr in member_addrs(&cx.root, l) {
            match ask::<T>(cx.secret()?, addr, &req) {
                Ok(v) => return Ok(v),
                Err(JoinError::Refused(JoinRefusal::NotYet { .. })) => {
                    last = format!("{addr}: no {what} there yet")
                }
                Err(JoinError::WrongSecret(e)) => return Err(e),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if t.elapsed() > limit {
            return Err(format!("no member handed out {what} in {limit:?} ({last})"));
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// The member's side: the registered answer for the request's topic.
pub(super) fn respond(
    answers: &[&dyn JoinAnswer],
    cx: &Ctx,
    view: &ClusterView,
    req: &JoinRequest,
) -> Value {
    let r = match answers.iter().find(|a| a.topic() == req.topic) {
        Some(a) => a.answer(cx, view, req),
        None => Err(JoinRefusal::UnknownTopic {
            topic: req.topic.clone(),
        }),
    };
    let resp = match r {
        Ok(payload) => JoinResponse::Granted { payload },
        Err(refusal) => JoinResponse::Refused { refusal },
    };
    serde_json::to_value(resp).unwrap_or(Value::Null)
}

/// A refusal for a request that could not be read.
pub(super) fn garbled(reason: String) -> Value {
    serde_json::to_value(JoinResponse::Refused {
        refusal: JoinRefusal::Failed { reason },
    })
    .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_round_trip_as_typed_values() {
        let v = garbled("bad frame".into());
        assert_eq!(v["result"], "refused");
        assert_eq!(v["refusal"]["kind"], "failed");
        let back: JoinResponse = serde_json::from_value(v).expect("decodes");
        match back {
            JoinResponse::Refused { refusal } => assert_eq!(
                refusal,
                JoinRefusal::Failed {
                    reason: "bad frame".into()
                }
            ),
            JoinResponse::Granted { .. } => panic!("granted"),
        }
    }
}
