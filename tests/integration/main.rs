mod notify;
mod support;
