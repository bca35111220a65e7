mod authority;
mod core;
mod hostile;
