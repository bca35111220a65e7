mod authority;
mod cli;
mod core;
mod hostile;
mod vault;
