"""Running the deployment: health checks, metrics, GPU capacity and deploy-time configuration."""
