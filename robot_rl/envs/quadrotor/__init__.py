"""Quadrotor tasks: Hover, Waypoint, Track; the rate/attitude controllers and mixer; the expert."""
