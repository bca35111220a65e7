mod authority;
mod cli;
mod commands;
mod core;
mod deploy;
mod hostile;
mod perf;
mod vault;
