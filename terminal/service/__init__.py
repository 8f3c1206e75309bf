"""Field service: the configuration file, provisioning and unit swap, `pipos doctor`."""
