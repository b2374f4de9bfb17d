pub mod apps;
pub mod builds;
pub mod certs;
pub mod images;
pub mod nodes;
pub mod up;
