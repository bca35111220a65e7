mod authority;
mod cli;
mod core;
mod deploy;
mod hostile;
mod perf;
mod vault;
