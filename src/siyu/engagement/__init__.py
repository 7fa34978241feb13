"""Re-engagement: journeys and broadcasts that reach each person once, on the channel WeChat allows."""
