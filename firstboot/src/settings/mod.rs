// SPDX-License-Identifier: Apache-2.0
//! Node settings from homecloud.toml, applied at every boot before sshd and
//! the cluster start (`hc-settings.service`), so an edit on HCBOOT takes
//! effect at the next boot: the admin login, the time zone, static
//! addresses and Wi-Fi.

pub mod address;
pub mod admin;
pub mod timezone;
pub mod wifi;

pub use address::Address;
pub use admin::Admin;
pub use timezone::Timezone;
pub use wifi::WifiStep;
