pub mod certs;
pub mod nodes;
pub mod up;
