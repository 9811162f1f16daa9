mod kube;
mod sandbox;
mod support;
