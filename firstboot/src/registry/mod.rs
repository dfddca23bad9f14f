// SPDX-License-Identifier: Apache-2.0
//! The cluster's own registry: its store is seeded from the OCI content the
//! image carries, so every node pulls the service images by digest with no
//! route to the internet.

pub mod seed;
pub mod step;
