"""Commerce: WeChat Pay merchants, purchases and refunds (Pay notifications, the brand's backend API),
products, and each contact's purchase figures."""
