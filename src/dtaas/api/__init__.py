"""The service router: the FastAPI app, its error handling and the /api/v1 routers."""
