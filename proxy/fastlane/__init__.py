"""The model endpoints served below aiohttp's ``web`` layer (see ``connection``)."""
