pub mod apps;
pub mod builds;
pub mod certs;
pub mod exec;
pub mod images;
pub mod keys;
pub mod nodes;
pub mod up;
