"""Saved segments: named audiences over a tenant's live contacts (tags, linked channels, rep owner,
last interaction, last purchase), counted live and streamed by contact id."""
