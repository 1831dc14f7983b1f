pub mod bench;
pub mod report;
