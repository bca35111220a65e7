mod authority;
mod cli;
mod core;
mod hostile;
mod perf;
mod vault;
