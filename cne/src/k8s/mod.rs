//! Running in a Kubernetes pod: the client of the AF_XDP device plugin ([`device_plugin`]: the UDS
//! handshake and the pinned-map alternative) and the `gen-config` subcommand ([`gen_config`]) that
//! writes a CNDP configuration from what the plugin and the kubelet allocated.

#[allow(unsafe_code)]
pub mod device_plugin;
pub mod gen_config;
