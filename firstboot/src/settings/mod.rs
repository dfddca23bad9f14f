// SPDX-License-Identifier: Apache-2.0
//! Node settings from homecloud.toml, applied at every boot before sshd and
//! the cluster start (`hc-settings.service`), so an edit on HCBOOT takes
//! effect at the next boot: the admin login and the time zone.

pub mod admin;
pub mod timezone;

pub use admin::Admin;
pub use timezone::Timezone;
