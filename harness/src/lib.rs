pub mod bench;
pub mod report;
pub mod run_kernel;
