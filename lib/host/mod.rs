//! Hosts: the agent that runs on each host (`one-bsud host <op>`) and the frontend's client
//! that reaches it over ssh.

pub mod agent;
